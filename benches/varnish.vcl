vcl 4.1;

# Varnish in front of bench_server's /bare/static, for benches/load.sh (which fills in
# @BACKEND_PORT@). Varnish's default caching: a 200 without Cache-Control is kept for its
# default TTL (120 s), far longer than a round.
backend default {
    .host = "127.0.0.1";
    .port = "@BACKEND_PORT@";
}
