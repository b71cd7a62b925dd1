package kit

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// SupervisorSpec says how to start a paramexec that supervises a testchild.
type SupervisorSpec struct {
	Bin      Binaries
	Flags    []string // paramexec's flags, before "--"
	Endpoint string   // the AWS endpoint: moto or a proxy in front of it
	Record   string   // the testchild's record file
	// LogFile, when set, receives paramexec's stderr (created 0600); else
	// the log is followed live through Supervisor.Log.
	LogFile string
	Hook    func(*LogLine) // for the live log; see FollowLog
}

// Supervisor is a running paramexec.
type Supervisor struct {
	Cmd  *exec.Cmd
	Log  *LiveLog // nil when the log goes to a file
	pipe *os.File // the read end behind Log
}

func pipe() (*os.File, io.Writer, error) {
	r, w, err := os.Pipe()
	return r, w, err
}

// StartSupervisor starts paramexec FLAGS -- testchild -record RECORD.
func StartSupervisor(spec SupervisorSpec) (*Supervisor, error) {
	args := append([]string{}, spec.Flags...)
	args = append(args, "--", spec.Bin.Testchild, "-record", spec.Record)
	cmd := exec.Command(spec.Bin.Paramexec, args...)
	cmd.Env = ChildEnv(spec.Endpoint)
	cmd.SysProcAttr = Managed()
	s := &Supervisor{Cmd: cmd}
	// A pipe of our own rather than StderrPipe: Wait closes that one as
	// soon as paramexec exits, which could cut off the end of its log.
	var r *os.File
	if spec.LogFile != "" {
		f, err := os.OpenFile(spec.LogFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("start paramexec: %w", err)
		}
		cmd.Stderr = f
	} else {
		var err error
		if r, cmd.Stderr, err = pipe(); err != nil {
			return nil, fmt.Errorf("start paramexec: %w", err)
		}
	}
	err := cmd.Start()
	// The child has its copy; ours would keep the reader from seeing EOF.
	cmd.Stderr.(*os.File).Close()
	if err != nil {
		if r != nil {
			r.Close()
		}
		return nil, fmt.Errorf("start paramexec: %w", err)
	}
	if r != nil {
		s.Log = FollowLog(r, spec.Hook)
		s.pipe = r
	}
	return s, nil
}

// Pid is paramexec's process id, which is its child's parent pid.
func (s *Supervisor) Pid() int { return s.Cmd.Process.Pid }

// Stop asks paramexec to stop (it stops its child first) and waits for it,
// killing it after grace; the live log, if any, is read to its end.
func (s *Supervisor) Stop(grace time.Duration) error {
	err := Stop(s.Cmd, grace)
	if s.Log != nil {
		// EOF comes when the child's copy of stderr closes too; a child that
		// outlived a killed paramexec must not hang the benchmark.
		select {
		case <-s.Log.Done():
		case <-time.After(5 * time.Second):
		}
		s.pipe.Close()
		<-s.Log.Done()
	}
	return err
}
