//! The Lua scripts of [`RedisStore`](super::RedisStore): each one atomic step on one group's
//! keys (entry, index, write generation, lock).

/// Redis' own clock in milliseconds, as the scripts read it (one clock for every server).
const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

/// Adds the entry's member (ARGV[4]) to the group's index (KEYS[2], a sorted set scored by
/// expiry), drops the members that have expired, and keeps the index alive as long as its
/// longest-lived member.
const INDEX: &str = r"
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// Sets the entry (value ARGV[1], expiry ARGV[2] ms) and indexes it; unless ARGV[3] is a
/// generation and the resource's write generation (KEYS[3]) is no longer it: a write on some
/// server collected the resource since the miss began. An empty ARGV[3] sets unconditionally.
pub(super) fn set_script() -> String {
    format!(
        "{NOW}if ARGV[3] ~= '' and \
         tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then\n  \
         return 0\nend\nredis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n{INDEX}"
    )
}

/// Moves the group's write generation (KEYS[2]) on, and drops, in the same atomic step, every
/// indexed entry of the group (KEYS[1]); with ARGV[2] = '1', only the members that start with
/// ARGV[1] (`<group query>\n`). A member is `<group query>\n<entry key>`. Members that have
/// expired are dropped from the index too. Then publishes the collection on the invalidation
/// channel (ARGV[3], message ARGV[4]), for local tiers ([`TieredStore`](super::TieredStore)).
/// Returns how many entries existed.
pub(super) const COLLECT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local p = ARGV[1]
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if ARGV[2] == '0' or string.sub(m, 1, #p) == p then
    local nl = string.find(m, '\n', 1, true)
    if nl then
      n = n + redis.call('DEL', string.sub(m, nl + 1))
    end
    redis.call('ZREM', KEYS[1], m)
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
";

/// Releases a resource's write lock (KEYS[1]) if the token ARGV[1] still holds it.
pub(super) const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes one entry (KEYS[1]) and its index membership (ARGV[1]).
pub(super) const REMOVE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
";
