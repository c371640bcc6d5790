#!/bin/bash
# The healthchecks of docker-compose.yml, in bash rather than Python: Docker runs
# each one every couple of seconds in every container, and an interpreter start
# costs ~70 ms of CPU where this costs ~2 ms.
#
#   healthcheck.sh CHECK [CHECK...]       exit 0 when every check passes
#
#   hello HOST PORT        a real lab-protocol hello on PORT, answered "ok" with a greeting
#   tcp HOST PORT          a TCP connection is accepted
#   http HOST PORT PATH    GET PATH answers 2xx
#   fresh FILE SECONDS     FILE was touched within SECONDS (a heartbeat the service keeps)
#
# A failing check prints one line on stderr. Each read waits at most
# SOCKETLAB_HEALTH_TIMEOUT seconds (default 2); Docker's own timeout bounds the rest.
set -u

TIMEOUT=${SOCKETLAB_HEALTH_TIMEOUT:-2}
# encode_request("hello", "health"): 2-byte header length, JSON header, JSON content.
# tests/unit/test_healthcheck.py checks these bytes against the protocol package.
HELLO='\000g{"byteorder": "little", "content-type": "text/json", "content-encoding": "utf-8", "content-length": 38}{"action": "hello", "value": "health"}'

fail() {
    echo "unhealthy: $*" >&2
    exit 1
}

check_hello() {
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || fail "no connection to $1:$2"
    printf '%b' "$HELLO" >&3 2>/dev/null || fail "cannot send hello to $1:$2"
    local head body
    # The answer's header and content are JSON objects: read each up to its "}".
    IFS= read -r -t "$TIMEOUT" -d '}' head <&3 || fail "no answer to hello from $1:$2"
    IFS= read -r -t "$TIMEOUT" -d '}' body <&3 || fail "half an answer to hello from $1:$2"
    exec 3<&-
    case "$head" in
        *'"status": "ok"'*) ;;
        *) fail "hello refused by $1:$2: ${body#*\"error\": }" ;;
    esac
    case "$body" in
        *'"result": "Hello, '*) ;;
        *) fail "unexpected answer to hello from $1:$2" ;;
    esac
}

check_tcp() {
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || fail "no connection to $1:$2"
    exec 3<&-
}

check_http() {
    { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || fail "no connection to $1:$2"
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3 2>/dev/null ||
        fail "cannot send to $1:$2"
    local status
    IFS= read -r -t "$TIMEOUT" status <&3 || fail "no answer from http://$1:$2$3"
    exec 3<&-
    case "$status" in
        HTTP/1.?\ 2??\ *) ;;
        *) fail "http://$1:$2$3 answered ${status%$'\r'}" ;;
    esac
}

check_fresh() {
    local now touched
    printf -v now '%(%s)T' -1
    touched=$(stat -c %Y "$1" 2>/dev/null) || fail "no heartbeat at $1"
    ((now - touched <= $2)) || fail "heartbeat $1 is $((now - touched)) s old (limit $2 s)"
}

[ $# -gt 0 ] || fail "usage: healthcheck.sh hello|tcp|http|fresh ARGS... [more checks]"
while [ $# -gt 0 ]; do
    case "$1" in
        hello | tcp)
            [ $# -ge 3 ] || fail "$1 needs HOST PORT"
            "check_$1" "$2" "$3"
            shift 3
            ;;
        http)
            [ $# -ge 4 ] || fail "http needs HOST PORT PATH"
            check_http "$2" "$3" "$4"
            shift 4
            ;;
        fresh)
            [ $# -ge 3 ] || fail "fresh needs FILE SECONDS"
            check_fresh "$2" "$3"
            shift 3
            ;;
        *) fail "unknown check $1" ;;
    esac
done
exit 0
