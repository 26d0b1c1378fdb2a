package shmcast

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// TestSegmentPath: the naming rule shared with the Rust library and CLI
// (docs/CLI.md, "Naming a segment"), case by case.
func TestSegmentPath(t *testing.T) {
	long := strings.Repeat("x", 255)
	for _, c := range []struct{ name, want string }{
		{"demo", "/dev/shm/demo"},
		{"/demo", "/dev/shm/demo"},
		{"demo.seg", "/dev/shm/demo.seg"},
		{"/demo.seg", "/dev/shm/demo.seg"},
		{"...", "/dev/shm/..."},
		{".hidden", "/dev/shm/.hidden"},
		{long, "/dev/shm/" + long},       // 255 bytes: the longest name
		{"/" + long, "/dev/shm/" + long}, // the slash does not count
		// A slash after the first character: a path, unchanged.
		{"/run/app/seg", "/run/app/seg"},
		{"/tmp/seg", "/tmp/seg"},
		{"./seg", "./seg"},
		{"../seg", "../seg"},
		{"dir/seg", "dir/seg"},
		{"/a/b/c", "/a/b/c"},
		{"//demo", "//demo"},
		{"demo/", "demo/"},   // a trailing slash makes a path too
		{"/demo/", "/demo/"}, // (of a directory, which OpenPath refuses)
		{"/" + long + "/x", "/" + long + "/x"},
		{strings.Repeat("y", 300) + "/z", strings.Repeat("y", 300) + "/z"}, // paths have no 255-byte limit here
	} {
		if got, err := SegmentPath(c.name); err != nil || got != c.want {
			t.Errorf("SegmentPath(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for _, c := range []struct{ name, reason string }{
		{"", "the name is empty"},
		{"/", "the name is empty"},
		{"a\x00b", "the name contains a NUL byte"},
		{"/a\x00b", "the name contains a NUL byte"},
		{"\x00", "the name contains a NUL byte"},
		{".", "'.' and '..' are not segment names"},
		{"..", "'.' and '..' are not segment names"},
		{"/.", "'.' and '..' are not segment names"},
		{"/..", "'.' and '..' are not segment names"},
		{long + "x", "the name is longer than 255 bytes"},
		{"/" + long + "x", "the name is longer than 255 bytes"},
		{"dir/a\x00b", "the name contains a NUL byte"}, // also in a path
		{"/tmp/\x00", "the name contains a NUL byte"},
		{"\x00/", "the name contains a NUL byte"},
	} {
		got, err := SegmentPath(c.name)
		var ne *NameError
		if !errors.Is(err, ErrInvalidName) || !errors.As(err, &ne) || got != "" {
			t.Errorf("SegmentPath(%q) = %q, %v; want a *NameError", c.name, got, err)
			continue
		}
		if ne.Name != c.name || ne.Reason != c.reason {
			t.Errorf("SegmentPath(%q): NameError{%q, %q}, want reason %q", c.name, ne.Name, ne.Reason, c.reason)
		}
		// Open refuses the same names with the same error, before any system call.
		if _, err := Open(c.name); !errors.As(err, &ne) || ne.Name != c.name || ne.Reason != c.reason {
			t.Errorf("Open(%q): %v, want the NameError of SegmentPath", c.name, err)
		}
	}
}

func TestNameErrorMessage(t *testing.T) {
	_, err := Open("/")
	if want := `shmcast: invalid segment name "/": the name is empty`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	_, err = OpenPath("")
	if !errors.Is(err, ErrInvalidName) {
		t.Errorf("OpenPath(\"\"): %v, want ErrInvalidName", err)
	}
	_, err = OpenPath("seg\x00")
	if want := `shmcast: invalid segment name "seg\x00": the path contains a NUL byte`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

// TestOpenNameForms opens one segment file through each form of path that
// Open accepts, and checks the errors of paths that name no segment.
func TestOpenNameForms(t *testing.T) {
	_, path := segtest.Temp(t, 4096)
	dir := filepath.Dir(path)
	t.Chdir(dir)
	for _, name := range []string{path, "./seg", "../" + filepath.Base(dir) + "/seg", dir + "//seg"} {
		r, err := Open(name)
		if err != nil {
			t.Errorf("Open(%q): %v", name, err)
			continue
		}
		if r.Path() != name {
			t.Errorf("Open(%q).Path() = %q", name, r.Path())
		}
		r.Close()
	}
	// A trailing slash after a file: not a directory.
	if _, err := Open(path + "/"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Open(%q): %v, want ENOTDIR", path+"/", err)
	}
	// A directory, with or without its trailing slash: not a regular file.
	for _, name := range []string{dir + "/", "./"} {
		if _, err := Open(name); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open(%q): %v, want not a regular file", name, err)
		}
	}
	if _, err := Open("./missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(./missing): %v, want fs.ErrNotExist", err)
	}
	// A bare name is looked for in /dev/shm, not in the working directory,
	// which has a file of that name.
	if _, err := os.Stat(ShmDir + "/seg"); errors.Is(err, fs.ErrNotExist) {
		if _, err := Open("seg"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(seg) with ./seg present: %v, want fs.ErrNotExist", err)
		}
	}
}

// TestSegmentPathNonUTF8: a name that is not valid UTF-8 is refused as the
// Rust library refuses it (it takes names as UTF-8 strings), before any
// other check, in a path as in a shared-memory name.
func TestSegmentPathNonUTF8(t *testing.T) {
	for _, name := range []string{"\xff", "/a\xffb", "dir/\xfe", "/tmp/x\xc0", "\xff\x00", "/\xff/.."} {
		_, err := SegmentPath(name)
		var ne *NameError
		if !errors.As(err, &ne) || ne.Reason != "the name is not valid UTF-8" {
			t.Errorf("SegmentPath(%q): %v, want the non-UTF-8 NameError", name, err)
		}
		if _, err := Open(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Open(%q): %v, want ErrInvalidName", name, err)
		}
	}
}

// within fails the test if f has not returned within 10 s (a hang).
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s hung", what)
		return nil
	}
}

// TestOpenNotARegularFile: a FIFO (which would block a read-only open), a
// device and a directory are reported as what they are, as in Rust.
func TestOpenNotARegularFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, kind string
		opts       []Option
	}{
		{fifo, "a FIFO (named pipe)", []Option{WithWait(WaitSpin)}}, // read-only open
		{fifo, "a FIFO (named pipe)", nil},
		{"/dev/zero", "a character device", []Option{WithWait(WaitSpin)}},
		{t.TempDir(), "a directory", nil},
	} {
		err := within(t, "OpenPath("+c.path+")", func() error {
			_, err := OpenPath(c.path, c.opts...)
			return err
		})
		var fe *FileTypeError
		if !errors.Is(err, ErrNotRegularFile) || !errors.As(err, &fe) || fe.Kind != c.kind {
			t.Errorf("OpenPath(%s): %v, want a FileTypeError %q", c.path, err, c.kind)
			continue
		}
		if !strings.Contains(err.Error(), "is not a regular file: it is "+c.kind) {
			t.Errorf("message: %v", err)
		}
	}
}

// TestOpenRefusesSymlinkInShm: docs/SECURITY.md, a symbolic link at a
// shared-memory name is never followed (Rust refuses it too); a path given
// to OpenPath is the caller's choice and is followed.
func TestOpenRefusesSymlinkInShm(t *testing.T) {
	_, target := segtest.Temp(t, 4096)
	name := fmt.Sprintf("shmcast-go-link-%d", os.Getpid())
	link := ShmDir + "/" + name
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("cannot create a link in %s: %v", ShmDir, err)
	}
	defer os.Remove(link)
	_, err := Open(name)
	var fe *FileTypeError
	if !errors.As(err, &fe) || !strings.Contains(fe.Kind, "symbolic link") {
		t.Fatalf("Open(%q) through a link: %v, want a FileTypeError", name, err)
	}
	r, err := OpenPath(link)
	if err != nil {
		t.Fatalf("OpenPath(%s): %v", link, err)
	}
	r.Close()
}

func writeLock(t *testing.T, f *os.File) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), fOFDSetLK, &lk); err != nil {
		t.Fatal(err)
	}
}

// TestOpenEmptyFile: docs/LAYOUT.md, "Validating a segment before reading
// it": an empty file nobody holds is truncated at once; one whose producer
// lock is held is being created, retried for InitWait, and opened as soon
// as its producer has written it.
func TestOpenEmptyFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := OpenPath(empty)
	var he *HeaderError
	if !errors.Is(err, ErrTruncated) || !errors.As(err, &he) || he.Got != 0 || time.Since(start) > time.Second {
		t.Fatalf("empty file: %v after %v, want ErrTruncated at once", err, time.Since(start))
	}
	if !strings.Contains(err.Error(), "no producer is creating") {
		t.Errorf("message: %v", err)
	}

	creating := filepath.Join(dir, "creating")
	f, err := os.OpenFile(creating, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeLock(t, f)
	start = time.Now()
	_, err = OpenPath(creating)
	waited := time.Since(start)
	if !errors.Is(err, ErrNotInitialized) || !errors.As(err, &he) || !he.Creating {
		t.Fatalf("empty, locked: %v, want ErrNotInitialized (creating)", err)
	}
	if waited < InitWait-100*time.Millisecond || waited > InitWait+3*time.Second {
		t.Errorf("gave up after %v, want about %v", waited, InitWait)
	}
	golden, err := os.ReadFile("../testdata/golden/few.seg")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.Truncate(int64(len(golden)))
		f.WriteAt(golden[8:], 8)
		f.WriteAt(golden[:8], 0) // magic last
	}()
	r, err := OpenPath(creating, WithStart(Beginning))
	if err != nil {
		t.Fatalf("open while it is being created: %v", err)
	}
	r.Close()
}
