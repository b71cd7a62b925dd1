#!/usr/bin/env bash
# paramexec in one minute, without an AWS account.
#
#   ./examples/demo.sh
#
# 1. reads examples/demo.env and shows what it resolved (values masked);
# 2. runs a command with those variables;
# 3. supervises a small "app", edits the .env file, and shows the app being
#    restarted in place with the new value;
# 4. puts a small web app behind --proxy --restart overlap, sends it a
#    steady loop of requests on loopback, changes a value (0 requests may
#    fail: it counts them and exits 1 if one did), then sets a value the app
#    cannot start with: the new child is rejected and the old one, the same
#    process, serves on;
# 5. if moto_server (a local AWS emulator) is installed, does the same as 3
#    with real Parameter Store calls: --path, a SecureString, a live change.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "build"
echo "(compiling paramexec: the first time, Go downloads the AWS SDK modules and compiles them, which takes a minute or two; later builds take seconds)"
CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 -ldflags='-s -w' -o "$work/paramexec" .
ls -lh "$work/paramexec" | awk '{print "static binary:", $5}'
pe="$work/paramexec"

say "what does examples/demo.env resolve to? (values masked)"
"$pe" --env-file examples/demo.env --print

say "run a command with it (exec in place: paramexec becomes the command)"
"$pe" --env-file examples/demo.env -- sh -c 'echo "$GREETING; database at $DB_HOST"'

say "supervise an app and change its configuration while it runs"
cp examples/demo.env "$work/app.env"
app='echo "app pid $$ started: GREETING=$GREETING"; trap "echo app pid $$ stopping; exit 0" TERM; while :; do sleep 0.1; done'
"$pe" --env-file "$work/app.env" --interval 1h --log-level warn -- sh -c "$app" &
sleep 1
echo '(editing the .env file the way an editor saves: write a temp file, rename it over)'
sed 's/Hello from a .env file/Hello again, after an edit/' "$work/app.env" >"$work/app.env.tmp"
mv "$work/app.env.tmp" "$work/app.env"
sleep 1.5
kill -TERM %1 && wait %1 || true

say "a change under load, with --proxy --restart overlap: no request may fail"
# The app is the project's test server (internal/testserver): it takes 1 s
# to boot, answers {"pid":…,"value":…} on the port paramexec gives it in
# $PORT, and crashes at start when VALUE is "broken", as an app does with a
# bad database URL.
go build -o "$work/web" ./internal/testserver
printf 'VALUE=blue\n' >"$work/web.env"
: >"$work/web.log"
TESTSERVER_BOOT_DELAY=1s TESTSERVER_CRASH_IF=VALUE=broken TESTSERVER_CRASH_AFTER=300ms \
	"$pe" --env-file "$work/web.env" --interval 1h --proxy 127.0.0.1:0=PORT \
	--restart overlap --ready 'http://127.0.0.1:{port}/up' --grace 5s \
	-- "$work/web" 2>"$work/web.log" &
web=$!
# Every wait below is bounded: a demo that hangs teaches nothing.
waitfor() { # seconds, then a command that succeeds when the wait is over
	local until=$((SECONDS + $1)); shift
	until "$@"; do
		if ((SECONDS >= until)); then echo "demo: gave up waiting for: $*" >&2; exit 1; fi
		sleep 0.1
	done
}
waitfor 20 grep -q 'msg="proxy switched"' "$work/web.log"
addr=$(sed -n 's/.*msg="proxy listening".* address=\([^ ]*\).*/\1/p' "$work/web.log")
url="http://$addr/"
echo "paramexec listens on $addr; the app (VALUE=blue) boots behind it"

# The load: one request after another, each bounded to 5 s, until told to
# stop (at most 3000), each on a new connection. It records every answer,
# {"pid":N,"value":"…"} on a line of its own, or FAIL.
load() {
	local n=0
	while [ ! -e "$work/stop" ] && ((n < 3000)); do
		curl -fsS --max-time 5 "$url" 2>/dev/null || echo FAIL
		n=$((n + 1))
	done >"$work/answers"
}
load &
loader=$!
# served prints "PID VALUE" of the latest whole answer.
served() { sed -n 's/.*"pid":\([0-9]*\).*"value":"\([^"]*\)".*/\1 \2/p' "$work/answers" | tail -n 1; }
serving() { served | grep -q " $1\$"; }
waitfor 10 test -s "$work/answers"
sleep 1

echo '(changing VALUE to green: the new child boots while the old one serves)'
printf 'VALUE=green\n' >"$work/web.env.tmp" && mv "$work/web.env.tmp" "$work/web.env"
waitfor 20 grep -q 'msg="old child exited"' "$work/web.log"
waitfor 10 serving green
read -r good_pid _ < <(served)
sleep 1

echo '(changing VALUE to broken: the app cannot start with it)'
printf 'VALUE=broken\n' >"$work/web.env.tmp" && mv "$work/web.env.tmp" "$work/web.env"
waitfor 20 grep -q 'msg="rollback finished' "$work/web.log"
sleep 1
touch "$work/stop"
wait "$loader"
read -r last_pid last_value < <(served)

grep -E 'msg="?(overlap begun|switched|old child exited|change rejected|rollback finished)' "$work/web.log" |
	sed -E 's/^time=[^ ]*T([0-9:.]{12})[^ ]* level=([A-Z]+)/\1 \2/; s/ app=paramexec//'
total=$(grep -c . "$work/answers" || true)
failed=$(grep -c FAIL "$work/answers" || true)
count() { grep -c "\"value\":\"$1\"" "$work/answers" || true; }
echo "requests: $total, failed: $failed; answered with VALUE=blue: $(count blue), green: $(count green), broken: $(count broken)"
echo "after the bad value: pid $last_pid serves VALUE=$last_value; pid $good_pid served green before it, so the same process kept serving"
kill -TERM "$web" && wait "$web" || true
if [ "$failed" != 0 ] || [ "$last_pid" != "$good_pid" ] || [ "$last_value" != green ]; then
	echo "demo: FAILED: a request failed, or the bad value was not rolled back" >&2
	exit 1
fi

if ! command -v moto_server >/dev/null; then
	say "moto_server is not installed: skipping the Parameter Store part"
	exit 0
fi

say "the same with Parameter Store, on a local emulator (moto_server)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1 \
	AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true
until curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1; do sleep 0.2; done
put() { # name value type; moto reads the account and Region from the
	# credential scope and, by default, does not check the signature.
	curl -fs "$AWS_ENDPOINT_URL/" -H 'Content-Type: application/x-amz-json-1.1' \
		-H 'X-Amz-Target: AmazonSSM.PutParameter' \
		-H "Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0" \
		-d "{\"Name\":\"$1\",\"Value\":\"$2\",\"Type\":\"$3\",\"Overwrite\":true}" >/dev/null
}
put /demo/prod/greeting "Hello from Parameter Store" String
put /demo/prod/db/password "s3cret-v1" SecureString
"$pe" --path /demo/prod --print
app='echo "app pid $$ started: GREETING=$GREETING, DB_PASSWORD has ${#DB_PASSWORD} characters"; trap "exit 0" TERM; while :; do sleep 0.1; done'
"$pe" --path /demo/prod --interval 1s -- sh -c "$app" &
sleep 2
echo '(rotating the password in Parameter Store)'
put /demo/prod/db/password "s3cret-v2-longer" SecureString
sleep 3.5
kill -TERM %2 && wait %2 || true
say "done"
