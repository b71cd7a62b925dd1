# Puma behind paramexec --listen: serve only on the socket paramexec passes
# (systemd socket activation, fd 3), never on a port of Puma's own, so that
# every Puma paramexec starts shares the one socket paramexec keeps open.
bind_to_activated_sockets "only"

# Exit 0 after a graceful SIGTERM (Puma 5's default is to exit 143), so that
# a replaced Puma logs code=0 and paramexec, stopped, exits 0.
raise_exception_on_sigterm false

# In a Rails app this file is config/puma.rb: keep its threads, workers and
# preload settings. Cluster mode works too: the master takes the socket and
# sends READY=1 once booted; the workers it forks share the socket.
