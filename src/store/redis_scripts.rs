//! The Lua scripts of [`RedisStore`](super::RedisStore): each one atomic step on one group's
//! keys (entry, index, write generations, lock), all under the group's hash tag.
//!
//! An entry's value starts with the two write generations it was stored under (16 hex digits
//! each: the group's, then its query string's); a read ([`RedisStore::get`](super::RedisStore))
//! fetches the entry and both generation keys in one `MGET` and serves the entry only if they
//! still match. A collect deletes a generation key: one O(1) step, whatever the number of
//! stored variants. A generation key that is missing (collected, expired, evicted, or Redis
//! restarted) is replaced by a new random value, so no entry stored before can match again.

/// Redis' own clock in milliseconds, as the scripts read it (one clock for every server).
const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

/// Returns the group's and query's generations (KEYS[1], KEYS[2]), making each that is missing
/// with a new random value (ARGV[1], ARGV[2]); each lives at least ARGV[3] ms (the longest a
/// miss may take to store), and longer when an entry stored under it does.
pub(super) const GENERATION: &str = r"
local ttl = tonumber(ARGV[3])
local g = {}
for i = 1, 2 do
  local v = redis.call('GET', KEYS[i])
  if not v then
    v = ARGV[i]
    redis.call('SET', KEYS[i], v, 'PX', ttl)
  elseif redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  g[i] = v
end
return g[1] .. g[2]
";

/// Sets the entry (KEYS[1]; value ARGV[1], expiry ARGV[2] ms) prefixed with its generations,
/// and indexes it in the group's index (KEYS[2], a sorted set of entry keys scored by expiry).
///
/// With ARGV[3] set, only if the generations (KEYS[3], KEYS[4]) are still ARGV[3]: a write on
/// some server collected the resource since the miss began; and only while no write of the
/// group holds its lock (KEYS[5]): a response stored during a write would reach its client
/// with a tag the write cannot know it made stale. With ARGV[3] empty, under the
/// current generations, made (ARGV[4], ARGV[5]) where missing. The generation keys and the
/// index live at least as long as the entry. When the group holds ARGV[6] entries already, the
/// ones closest to expiry are dropped first (for one scope's lifetime, the oldest).
pub(super) fn set_script() -> String {
    format!("{NOW}{SET}")
}

const SET: &str = r"
local ttl = tonumber(ARGV[2])
local gp = redis.call('GET', KEYS[3])
local gq = redis.call('GET', KEYS[4])
if ARGV[3] ~= '' then
  if not gp or not gq or (gp .. gq) ~= ARGV[3] or redis.call('EXISTS', KEYS[5]) == 1 then
    return 0
  end
else
  if not gp then
    gp = ARGV[4]
    redis.call('SET', KEYS[3], gp, 'PX', ttl)
  end
  if not gq then
    gq = ARGV[5]
    redis.call('SET', KEYS[4], gq, 'PX', ttl)
  end
end
redis.call('SET', KEYS[1], gp .. gq .. ARGV[1], 'PX', ttl)
for i = 2, 4 do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], KEYS[1]) then
  local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6]) + 1
  if over > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], over)
    for i = 1, #popped, 2 do
      redis.call('DEL', popped[i])
    end
  end
end
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
";

/// Retires a write generation (KEYS[1]: the group's, or one query string's): every entry stored
/// under it stops matching, in one O(1) step. Then publishes the collection on the invalidation
/// channel (ARGV[1], message ARGV[2]), for local tiers ([`TieredStore`](super::TieredStore)).
/// Returns how many generation keys there were (0 or 1).
pub(super) const COLLECT: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

/// Takes a resource's write lock (KEYS[1]) for the token ARGV[1], for ARGV[2] ms. Returns 1
/// when the token holds it, also when it held it already (an earlier attempt whose reply was
/// lost), else 0.
pub(super) const LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Releases a resource's write lock (KEYS[1]) if the token ARGV[1] still holds it.
pub(super) const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes one entry (KEYS[1]) and its index membership (KEYS[2]).
pub(super) const REMOVE: &str = r"
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
";
