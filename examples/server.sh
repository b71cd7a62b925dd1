#!/bin/sh
# A stand-in for your app, for the README's quick start: it shows the
# configuration it was started with (the secret only by its length), then
# serves nothing until it is asked to stop, as a long-running server would.
echo "server pid $$: GREETING=${GREETING-<unset>} LOG_LEVEL=${LOG_LEVEL-<unset>} DATABASE_URL has ${#DATABASE_URL} characters"
trap 'echo "server pid $$: stopping"; exit 0' TERM INT
while :; do
	sleep 1 &
	wait $!
done
