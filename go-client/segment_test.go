package shmcast

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
	_, path := fileSegment(t, 4096)
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
