package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Setup is what every benchmark command starts with: binaries, an emulator
// and a working directory for logs and records.
type Setup struct {
	Bin  Binaries
	Emu  *Emulator
	Work string
	temp bool // Work is ours to remove
	log  io.Writer
}

// Prepare builds the binaries (or takes those in binDir, building only
// the missing ones), starts moto (or uses
// motoURL) and makes workDir, or a temporary directory when it is "".
func Prepare(ctx context.Context, motoURL, binDir, workDir string, log io.Writer) (*Setup, error) {
	s := &Setup{Work: workDir, log: log}
	if s.Work == "" {
		dir, err := os.MkdirTemp("", "paramexec-bench-")
		if err != nil {
			return nil, err
		}
		s.Work, s.temp = dir, true
	} else if err := os.MkdirAll(s.Work, 0o700); err != nil {
		return nil, err
	}
	reuse := binDir != ""
	if !reuse {
		binDir = filepath.Join(s.Work, "bin")
	}
	fmt.Fprintf(log, "bench: building paramexec, floor and testchild into %s\n", binDir)
	var err error
	if s.Bin, err = Build(ctx, binDir, reuse); err != nil {
		s.Close(false)
		return nil, err
	}
	if s.Emu, err = StartEmulator(ctx, motoURL); err != nil {
		s.Close(false)
		return nil, err
	}
	return s, nil
}

// Close stops the emulator. A temporary working directory is removed if
// everything went well and kept, and named, for inspection otherwise.
func (s *Setup) Close(ok bool) error {
	var err error
	if s.Emu != nil {
		err = s.Emu.Close()
	}
	if s.temp {
		if ok && err == nil {
			err = errors.Join(err, os.RemoveAll(s.Work))
		} else {
			fmt.Fprintf(s.log, "bench: logs and child records kept in %s\n", s.Work)
		}
	}
	return err
}
