package main

// usage is the --help text. It reads like a short man page because on call
// it is often the only documentation at hand. examples/examples_test.go
// checks that it documents every flag config.go defines.
const usage = `NAME
    paramexec - run a command with its configuration from AWS Parameter Store,
    Secrets Manager or .env files, and restart it when that changes

SYNOPSIS
    paramexec [flags] [--] COMMAND [ARGS...]
    paramexec [flags] --print [--format dotenv|json|shell] [--reveal]

    paramexec reads its sources, adds them to the environment it inherited,
    and runs COMMAND with it. Without --interval, --init or --ready it
    replaces itself with COMMAND (exec), leaving nothing behind; otherwise it
    stays COMMAND's parent: it forwards signals, reaps orphans, restarts
    COMMAND when a value changes, and exits with COMMAND's status.

SOURCES (repeatable; a later source wins over an earlier one)
    --path PATH           every SSM parameter under PATH, recursively;
                          SecureString decrypted. PATH may be an ARN,
                          arn:aws:ssm:REGION:ACCOUNT:parameter/PATH: what
                          ACCOUNT shares with this one through AWS RAM
                          (read by ARN; listed by ssm:DescribeParameters)
    --param NAME[=VAR]    one SSM parameter by name or ARN, with an optional
                          :VERSION or :LABEL selector; VAR defaults to the
                          name's last segment
    --secret ID[=PREFIX]  one Secrets Manager secret by name or ARN; a JSON
                          object gives one variable per key, PREFIX before
                          each; anything else one variable named after the
                          secret's last segment
    --env-file FILE       a dotenv file (KEY=value, quotes, export, comments),
                          for development without AWS
    --no-override         keep inherited variables that a source also sets

REFERENCES
    An inherited variable whose whole value is a reference is replaced by the
    value it refers to, as ECS does for a task definition's "valueFrom":
        arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[:SELECTOR]
        ssm:/NAME[:SELECTOR]
        arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:STAGE[:VERSION_ID]]]
        secretsmanager:NAME[#JSON_KEY]
    REGION and ACCOUNT must be real (us-east-1, 123456789012): anything that
    is not exactly one of these forms is an ordinary value and stays as it is.

NAMING
    A parameter's variable is its name relative to --path, "/" and any
    character outside [A-Za-z0-9_] turned into "_", upper-cased; a leading
    digit gets a "_" prefix. /app/prod/db/password under --path /app/prod is
    DB_PASSWORD. Two parameters of one source with the same variable name are
    an error at start-up that names both.

WATCHING
    --interval DURATION   poll versions this often, with jitter; 0 (default)
                          means fetch once and exec the command in place;
                          at least 1s otherwise
    --on-change ACTION    restart (default), exit, or signal:NAME (the child
                          gets NAME and keeps its old environment)
    --grace DURATION      how long a stopping child has before SIGKILL to its
                          process group (default 10s); 0 means none: SIGKILL
                          right after the stop signal
    --stop-signal NAME    the signal that asks the child to stop (default
                          TERM), on a restart and when paramexec itself is
                          stopped: the first SIGTERM or SIGINT paramexec gets
                          reaches the child as NAME; a second one is
                          forwarded as it is
    --init                stay the parent (signal forwarding, zombie reaping)
                          even when not watching
    --discover-every N    look for added or removed parameters under a path
                          every Nth poll (default 10); the polls between ask
                          only for the versions of known names
    --settle DURATION     after a change is seen, wait until no further
                          change has been seen for DURATION before acting on
                          it (default 0: act at once); meanwhile poll every
                          DURATION/2 (at least 1s, at most --interval).
                          Changes seen while waiting join the same restart
    --settle-max DURATION with --settle: act at the latest DURATION after
                          the first change, even if changes keep coming
                          (default 4 x --settle; at least --settle)
    --splay DURATION      wait a random time in [0, DURATION) more before
                          acting on a change, so that a fleet that saw it at
                          once does not restart at once (default 0)

    A poll asks for versions, without decryption; values are read again
    only for a source whose versions moved. --env-file files are watched
    for writes as well. A failed poll is retried with backoff and logged
    with the AWS error code; the child keeps running with the values it has.
    A new environment that could not start the command (too large for
    execve, or the command not found with its PATH) is rejected before the
    child is touched, and the child keeps running.
    --settle, --settle-max and --splay delay whatever --on-change does, and
    need --interval.

SAFE RESTARTS
    --ready CHECK         repeatable; the child is ready when every check has
                          passed once. paramexec stays the parent (as with
                          --init), sends systemd READY=1 only then, and the
                          log's "restart finished" carries took= (change to
                          ready) and ready_after= (start to ready):
                            tcp:PORT, tcp:HOST:PORT   a TCP connect succeeds
                            http://HOST:PORT/PATH     a GET answers 2xx or 3xx
                            https://...               the same over TLS;
                            https+insecure://...      without a certificate check
                            notify                    the child sends READY=1 to
                                                      the NOTIFY_SOCKET paramexec
                                                      gives it
                            exec:COMMAND ARG...       the command exits 0; split
                                                      on spaces, no shell; it gets
                                                      paramexec's own environment,
                                                      not the fetched values
                          Checks are tried every 100-250ms, each try bounded
                          (1s; 5s for exec:).
    --ready-timeout D     how long a new child has to become ready (default
                          60s). A first child that is not ready by then is
                          stopped (stop signal, --grace, SIGKILL) and
                          paramexec exits 4.
    --rollback-window D   a child started for a change that exits within D
                          counts as failed (default 0: only --ready judges)

    Rollback is on with --ready or --rollback-window: when the child started
    for a change exits before it is ready (or within the window), or is not
    ready in time, paramexec stops it and starts a child with the last
    environment that was ready, logs an ERROR naming the variables that
    changed (never values) and the failure, and sets systemd's STATUS=. That
    environment is not tried again; only a different set of values is. If the
    restored child fails too, paramexec exits with its status (or 4) and the
    orchestrator takes over: the fault is then not the change. Changes that
    come while a child is not ready yet wait for it. --on-change exit and
    signal:NAME do not restart, so they are not rolled back.

    --restart MODE        how a change replaces the child (default stop-first):
                            stop-first  stop the old child (stop signal,
                                        --grace, SIGKILL), then start the new
                            overlap     start the new child while the old one
                                        serves; once the new one is ready
                                        (needs --interval, and --ready unless
                                        --proxy gives a default), the old
                                        one gets the stop signal and --grace.
                                        A new child that exits or is not ready
                                        in time is stopped and the old one
                                        serves on: a rollback with no gap.
    At most two children live at a time, one of them not ready. Changes during
    an overlap or a drain wait, the newest winning. A terminating signal
    during an overlap stops both children (stop signal, --grace, SIGKILL) and
    starts nothing; other signals go to the serving child, and are held for
    the new one until it takes over. The log says "overlap begun", "new child
    ready", "switched", "old child draining" and "old child exited", with
    durations. With a shared --listen socket a tcp: or http: check may be
    answered by the old child: use --ready notify, or an http: check on a
    port of the new child's own.
ZERO-DOWNTIME RESTARTS
    --listen [NAME=]ADDR  repeatable; bind ADDR (tcp://HOST:PORT, tcp://:PORT,
                          unix:///PATH) once, before the first child, and pass
                          it to every child by systemd's socket activation:
                          fds 3, 4, ..., LISTEN_FDS, LISTEN_FDNAMES (NAME, or
                          listenN for the Nth), LISTEN_PID the child's pid.
                          A unix socket file is created 0660 and removed at
                          exit. Between two children connections wait in the
                          socket's backlog instead of being refused
    --proxy LISTEN=VAR    listen on LISTEN (HOST:PORT or :PORT) and forward
                          TCP to the current child, which gets a free
                          loopback port in the variable VAR and must bind
                          127.0.0.1 on it; connections are held from a
                          child's stop signal until the next one accepts,
                          and those open to the old child get --grace.
                          Implies staying the parent
    --proxy-protocol      with --proxy: send the PROXY protocol v1 line with
                          the client's address before its bytes

    With stop-first restarts (the old child exits, then the new one starts)
    --listen and --proxy turn the new child's boot time from refused
    connections into waiting ones; with --restart overlap nothing waits: the
    old child serves until the new one is ready, then the proxy switches to
    the new one (in --ready, {port} is the child's port; with --proxy and no
    --ready a connect to it is overlap's check). A bad address is a usage error (2); an
    address in use or not allowed fails start-up with 3. A supervised child
    inherits no descriptor of paramexec's other than 0-2 and its sockets,
    and no LISTEN_* of paramexec's.

VALUES AS FILES (docs/values-as-files.md)
    --files-dir DIR       a private directory (made 0700; an existing one must
                          be this user's, mode 0700) for the values of sources
                          delivered as files, one file per variable (a JSON
                          secret: one per key), written before each child
                          starts and on every change, a whole poll at once;
                          removed when paramexec exits. Use a tmpfs
    --files-mode MODE     the files' mode: 0400 (default) or 0600
    --deliver HOW:SOURCE  repeatable; HOW is env (default), files, both, or
                          document (a --secret's JSON kept whole, one file
                          named PREFIX); SOURCE is KIND:VALUE, a source flag
                          and its value exactly as given:
                          files:secret:prod/tls=TLS_. Values delivered only
                          as files never enter the child's environment
    --on-change-of ACTION:SOURCE
                          repeatable; what a change of SOURCE's values does:
                          restart (default), reload (the child gets
                          --reload-signal and keeps running; SOURCE must be
                          delivered as files only) or none (the files change,
                          the child is not told). A change that also moves a
                          value in the environment restarts
    --reload-signal NAME  the reload signal (default HUP)
    --name-file           give the child NAME_FILE=DIR/NAME for each file, as
                          the official images' _FILE convention reads it

STARTING
    --startup-timeout D   a deadline on the whole start-up: retry throttling,
                          5xx and network errors until it, then exit 3
                          (default 30s; 0: one attempt, no retry)

INSPECTING
    --print               print the resolved variables and exit; values are
                          masked
    --reveal              with --print, show the values
    --explain             with --print, say where each value came from: flag
                          or reference, parameter or secret ARN and JSON key,
                          label or stage, version, and what it overrode; the
                          change log names source and old and new version
    --format FORMAT       dotenv (default), json or shell
    --log-format FORMAT   text (default) or json, on stderr
    --log-level LEVEL     debug, info (default), warn or error; debug explains
                          every decision. No level ever logs a value.
    --version             print the version and exit
    -h, --help            print this text and exit

ENVIRONMENT
    PARAMEXEC_<FLAG>      every flag, dashes as underscores: PARAMEXEC_PATH,
                          PARAMEXEC_LOG_LEVEL, ... Repeatable flags take a
                          comma-separated list (PARAMEXEC_READY splits only
                          before a check kind, so exec: and URLs may hold
                          commas). A flag on the command line
                          wins over its variable. PARAMEXEC_* variables are
                          not passed on to the command.
    AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...
                          the AWS SDK's default chain: credentials from the
                          environment, profiles, ECS task roles or EC2
                          instance profiles; on EC2 the Region comes from
                          instance metadata (IMDSv2) when not set.
                          AWS_ENDPOINT_URL points at an emulator such as moto
                          or LocalStack.
    NOTIFY_SOCKET         set by systemd for Type=notify units. When
                          paramexec stays the parent it sends READY=1 once the
                          command has started, RELOADING=1 and READY=1 around
                          a restart, STOPPING=1 on shutdown, and STATUS= lines
                          for systemctl status; the command does not inherit
                          the socket. With --ready, READY=1 waits for the
                          checks; with --ready notify the command gets a
                          socket of paramexec's instead (0600, in a private
                          directory), whose STATUS= lines are passed on.

EXIT STATUS
    the command's own exit status, or 128+N if it died from signal N;
    2    usage or configuration error
    3    a source could not be read at start-up (after retries)
    4    the first child did not become ready within --ready-timeout
    126  the command cannot be executed: not executable, or its arguments
         and environment too large for execve ("environment too large")
    127  the command was not found

EXAMPLES
    Local development, no AWS:
        paramexec --env-file .env -- ./server

    Docker (Dockerfile.example): ENTRYPOINT ["/paramexec"], CMD ["/app/server"]
        docker run -e PARAMEXEC_PATH=/myapp/prod -e PARAMEXEC_INTERVAL=5m myapp
        docker run -v "$PWD/.env:/run/config/app.env:ro" \
            -e PARAMEXEC_ENV_FILE=/run/config/app.env myapp

    ECS task definition (examples/ecs-task-definition.json):
        "environment": [
          {"name": "PARAMEXEC_PATH", "value": "/myapp/prod"},
          {"name": "PARAMEXEC_INTERVAL", "value": "5m"},
          {"name": "DATABASE_PASSWORD",
           "value": "arn:aws:ssm:us-east-1:123456789012:parameter/myapp/prod/db-password"}]

    EC2 systemd unit (examples/paramexec.service):
        Type=notify
        ExecStart=/usr/local/bin/paramexec --path /myapp/prod --interval 5m -- /opt/myapp/server

    A TLS certificate and key as files on a tmpfs, nginx reloaded (SIGHUP)
    when the secret rotates (docs/values-as-files.md):
        docker run --tmpfs /run/secrets:mode=0700 \
            -e PARAMEXEC_SECRET=prod/tls=TLS_ -e PARAMEXEC_INTERVAL=1m \
            -e PARAMEXEC_FILES_DIR=/run/secrets \
            -e PARAMEXEC_DELIVER=files:secret:prod/tls=TLS_ \
            -e PARAMEXEC_ON_CHANGE_OF=reload:secret:prod/tls=TLS_ mynginx

    See what a configuration resolves to, without values:
        paramexec --path /myapp/prod --print
`
