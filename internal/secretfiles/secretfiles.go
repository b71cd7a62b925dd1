// Package secretfiles writes values as files in a private directory, one
// complete set at a time, and removes them when asked.
package secretfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The layout, as Kubernetes' atomic writer has it: each set is written in
// a generation directory of its own, dataLink points at the current one,
// and each name is a symlink through dataLink. Swapping dataLink by one
// rename switches every file at once: a reader never sees a file half
// written, nor, through dataLink, a set made of two polls.
const (
	dataLink  = "..data"
	genPrefix = "..gen-"
	tmpPrefix = "..tmp-"
)

// A Writer owns one directory of value files. It is not safe for
// concurrent use: one goroutine (the watcher's hand-on) writes.
type Writer struct {
	dir     string
	mode    fs.FileMode
	created bool // dir was made by the Writer, and goes with it
	gen     int
	cur     string   // the current generation directory, "" before Write
	names   []string // the names linked in dir now
}

// Open makes dir (0700) if it is missing, or checks that an existing one
// is private: a directory, owned by this user, with no access for group or
// others. Whatever an earlier, killed run left in it (generations, links)
// is removed. mode is the files' mode: 0400 or 0600.
func Open(dir string, mode fs.FileMode) (*Writer, error) {
	if mode != 0o400 && mode != 0o600 {
		return nil, fmt.Errorf("file mode %#o: want 0400 or 0600", mode)
	}
	dir = filepath.Clean(dir)
	w := &Writer{dir: dir, mode: mode}
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		w.created = true
		// A umask may have taken the owner's bits too: set them.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("files directory %s: %w", dir, err)
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("files directory %s: %w", dir, err)
	}
	if err := CheckPrivate(dir); err != nil {
		return nil, err
	}
	if err := w.sweep(); err != nil {
		return nil, err
	}
	return w, nil
}

// CheckPrivate says why dir, if it exists, cannot hold secrets: not a
// directory (a symlink is not followed), owned by another user, or open to
// group or others. A missing dir is fine: Open makes it.
func CheckPrivate(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("files directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("files directory %s: not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("files directory %s: owned by uid %d, not by this user (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("files directory %s: mode %#o lets other users in; want 0700 (chmod 700 %s)", dir, perm, dir)
	}
	return nil
}

// Path is where the file of name is read.
func (w *Writer) Path(name string) string { return filepath.Join(w.dir, name) }

// Write makes values (name to value) the directory's set, at once: a new
// generation is written and synced in full before it becomes current, the
// old one is removed after. A name must be a plain file name.
func (w *Writer) Write(values map[string]string) error {
	names := make([]string, 0, len(values))
	for name := range values {
		if err := checkName(name); err != nil {
			return err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	w.gen++
	gen := genPrefix + strconv.Itoa(w.gen)
	if err := w.writeGen(gen, names, values); err != nil {
		_ = os.RemoveAll(filepath.Join(w.dir, gen))
		return err
	}
	if err := w.swap(gen); err != nil {
		_ = os.RemoveAll(filepath.Join(w.dir, gen))
		return err
	}
	old := w.cur
	w.cur = gen
	if err := w.link(names); err != nil {
		return err
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(w.dir, old)); err != nil {
			return fmt.Errorf("files directory %s: removing the previous set: %w", w.dir, err)
		}
	}
	return nil
}

// checkName refuses a name that is not one file in the directory, or that
// is one of the Writer's own.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, "..") {
		return fmt.Errorf("%q cannot be a file name", name)
	}
	return nil
}

// writeGen writes every value into the new generation directory gen.
func (w *Writer) writeGen(gen string, names []string, values map[string]string) error {
	dir := filepath.Join(w.dir, gen)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("files directory %s: %w", w.dir, err)
	}
	for _, name := range names {
		if err := writeFile(filepath.Join(dir, name), values[name], w.mode); err != nil {
			return fmt.Errorf("files directory %s: writing %s: %w", w.dir, name, err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("files directory %s: %w", w.dir, err)
	}
	defer d.Close()
	return d.Sync()
}

// writeFile creates path with mode (never wider, whatever the umask) and
// writes value to disk. The generation is not yet visible: no temporary
// name is needed inside it.
func writeFile(path, value string, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	err = errors.Join(err, f.Sync(), f.Chmod(mode), f.Close())
	return err
}

// swap points dataLink at gen by renaming a new symlink over it: one
// atomic step.
func (w *Writer) swap(gen string) error {
	tmp := filepath.Join(w.dir, tmpPrefix+"data")
	_ = os.Remove(tmp)
	if err := os.Symlink(gen, tmp); err != nil {
		return fmt.Errorf("files directory %s: %w", w.dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, dataLink)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("files directory %s: %w", w.dir, err)
	}
	return nil
}

// link makes dir/NAME a symlink through dataLink for each of names, and
// removes the links of names the set no longer has.
func (w *Writer) link(names []string) error {
	for _, name := range names {
		if slices.Contains(w.names, name) {
			continue
		}
		p := filepath.Join(w.dir, name)
		_ = os.Remove(p)
		if err := os.Symlink(filepath.Join(dataLink, name), p); err != nil {
			return fmt.Errorf("files directory %s: linking %s: %w", w.dir, name, err)
		}
	}
	for _, name := range w.names {
		if !slices.Contains(names, name) {
			if err := os.Remove(filepath.Join(w.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("files directory %s: unlinking %s: %w", w.dir, name, err)
			}
		}
	}
	w.names = names
	return nil
}

// Close removes every file the Writer made, and the directory if it made
// it.
func (w *Writer) Close() error {
	err := w.sweep()
	w.names, w.cur = nil, ""
	if w.created {
		err = errors.Join(err, os.Remove(w.dir))
	}
	if err != nil {
		return fmt.Errorf("files directory %s: removing: %w", w.dir, err)
	}
	return nil
}

// sweep removes the Writer's entries from the directory: generations,
// dataLink, and every symlink that leads through it. Other entries are
// the user's and stay.
func (w *Writer) sweep() error {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("files directory %s: %w", w.dir, err)
	}
	var errs error
	for _, e := range entries {
		p := filepath.Join(w.dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), ".."):
			errs = errors.Join(errs, os.RemoveAll(p))
		case e.Type()&fs.ModeSymlink != 0:
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, dataLink+"/") {
				errs = errors.Join(errs, os.Remove(p))
			}
		}
	}
	return errs
}
