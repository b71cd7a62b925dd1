#!/usr/bin/env bash
# paramexec in one minute, without an AWS account.
#
#   ./examples/demo.sh
#
# 1. reads examples/demo.env and shows what it resolved (values masked);
# 2. runs a command with those variables;
# 3. supervises a small "app", edits the .env file, and shows the app being
#    restarted in place with the new value;
# 4. if moto_server (a local AWS emulator) is installed, does the same with
#    real Parameter Store calls: --path, a SecureString, and a live change.
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
