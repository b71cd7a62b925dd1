# A stand-in for a Rails app (Rails' own config.ru is a Rack app as well):
# it answers with its pid and the GREETING it was started with.
run lambda { |env| [200, {"content-type" => "text/plain"}, ["pid #{Process.pid}: #{ENV.fetch('GREETING', 'unset')}\n"]] }
