package exec

// Names the external tests (package exec_test) need; paramexec itself does
// not, so they stay unexported.
const ExitNotReady = exitNotReady

var (
	ErrNotFound = errNotFound
	StatusCode  = statusCode
)
