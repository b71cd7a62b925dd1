package secretfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paramexec/paramexec/internal/testenv"
)

func TestWriteModesAndContent(t *testing.T) {
	for _, mode := range []fs.FileMode{0o400, 0o600} {
		dir := filepath.Join(t.TempDir(), "secrets")
		w, err := Open(dir, mode)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(map[string]string{"A": "one", "B": "two"}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
		}
		for name, want := range map[string]string{"A": "one", "B": "two"} {
			got, err := os.ReadFile(w.Path(name))
			if err != nil || string(got) != want {
				t.Fatalf("%s: %q, %v; want %q", name, got, err, want)
			}
			fi, err := os.Stat(w.Path(name))
			if err != nil || fi.Mode().Perm() != mode {
				t.Fatalf("%s: mode %v, %v; want %v", name, fi.Mode().Perm(), err, mode)
			}
		}
		// A name left out of the next set is gone; a new one appears.
		if err := w.Write(map[string]string{"B": "three", "C": "four"}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(w.Path("A")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("A after it left the set: %v", err)
		}
		if got, _ := os.ReadFile(w.Path("C")); string(got) != "four" {
			t.Fatalf("C: %q", got)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("dir after Close: %v; want it removed", err)
		}
	}
}

func TestOpenRefusesADirectoryOthersCanRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, 0o400)
	if err == nil || !strings.Contains(err.Error(), "other users") {
		t.Fatalf("Open of a 0750 directory: %v; want a refusal naming other users", err)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("CheckPrivate(file): %v", err)
	}
	if _, err := Open(t.TempDir(), 0o644); err == nil {
		t.Fatal("Open with mode 0644 succeeded")
	}
}

func TestOpenRefusesADirectoryOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFailOnCI(t, "needs root to give a directory to another user (CI runs as root)")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("CheckPrivate: %v", err)
	}
}

// An existing private directory keeps what is not the Writer's, loses what
// a killed run left, and stays after Close.
func TestExistingDirectorySweptAndKept(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mine"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "..gen-7"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/OLD", filepath.Join(dir, "OLD")); err != nil {
		t.Fatal(err)
	}
	w, err := Open(dir, 0o400)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(map[string]string{"A": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "mine" {
		t.Fatalf("after Close: %v, %v; want only the user's file", entries, err)
	}
	if err := syscall.Access(dir, 0); err != nil {
		t.Fatal(err)
	}
}

func TestBadNamesRefused(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "d"), 0o400)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, name := range []string{"", "a/b", "..data", ".."} {
		if err := w.Write(map[string]string{name: "v"}); err == nil {
			t.Errorf("Write of name %q succeeded", name)
		}
	}
}

// A reader that resolves the data link once and reads every file through
// it never sees a partial file, nor a set made of two writes. Every value
// of one write carries that write's number, padded long so that a torn
// write would show.
func TestConcurrentReaderSeesWholeSets(t *testing.T) {
	w, err := Open(filepath.Join(t.TempDir(), "d"), 0o400)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	names := []string{"A", "B", "C", "D"}
	set := func(n int) map[string]string {
		m := make(map[string]string)
		for _, name := range names {
			m[name] = strings.Repeat(strconv.Itoa(n)+",", 4096)
		}
		return m
	}
	if err := w.Write(set(0)); err != nil {
		t.Fatal(err)
	}
	const writes = 200
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var whole, readErr = 0, error(nil)
	wg.Go(func() {
		deadline := time.Now().Add(30 * time.Second) // bounded, whatever the writer does
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			ok, err := readSet(w.dir, names)
			if err != nil {
				readErr = err
				return
			}
			if ok {
				whole++
			}
		}
	})
	for n := 1; n <= writes; n++ {
		if err := w.Write(set(n)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if whole == 0 {
		t.Fatal("the reader never read a whole set")
	}
	t.Logf("%d whole sets read during %d writes", whole, writes)
}

// readSet reads every name through the generation the data link names
// now. ok is false when that generation went away under the reader (a
// newer one replaced it), which is not an error; a read that succeeded but
// mixes values or holds a torn one is.
func readSet(dir string, names []string) (ok bool, err error) {
	gen, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		return false, err
	}
	var first string
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, gen, name))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		parts := strings.Split(strings.TrimSuffix(string(b), ","), ",")
		if len(parts) != 4096 {
			return false, errors.New(name + ": a partial file")
		}
		for _, p := range parts {
			if p != parts[0] {
				return false, errors.New(name + ": a torn file")
			}
		}
		if first == "" {
			first = parts[0]
		} else if parts[0] != first {
			return false, errors.New("a set mixing writes " + first + " and " + parts[0])
		}
	}
	return true, nil
}
