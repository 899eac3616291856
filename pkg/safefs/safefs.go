// Package safefs opens files and checks directories where a symbolic link,
// a FIFO or a device planted by someone else must not be followed, read or
// written by a plugin that runs as root.
//
// The model: a directory is trusted when it is a real directory (not a
// symbolic link) that no one but its owner can write, and its owner is root
// or the user running the program (a CNI runtime runs plugins as root;
// tests and operator tools may run as another user). In a trusted directory
// no one else can plant anything, so the names read from it are the
// program's own; Open still refuses a symbolic link or a non-regular file
// in the last component, for stores made before the directory was checked
// and for directories such as host-local's that the program did not make.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotRegular: the name is a symbolic link, FIFO, socket, device or
	// directory where a regular file was expected.
	ErrNotRegular = errors.New("not a regular file")
	// ErrUntrusted: a directory is a symbolic link, not a directory, owned
	// by another user, or writable by group or others.
	ErrUntrusted = errors.New("untrusted directory")
	// ErrTooLarge: a file is larger than its reader allows.
	ErrTooLarge = errors.New("file too large")
)

// Open opens path like os.OpenFile, but never through a symbolic link in
// its last component (O_NOFOLLOW), never blocking on a FIFO (O_NONBLOCK,
// cleared once the file is known to be regular: open(2) of a FIFO for
// reading waits for a writer), and only a regular file: anything else is
// closed again and reported as ErrNotRegular. The descriptor is
// close-on-exec.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(perm.Perm()))
	switch {
	case errors.Is(err, unix.ELOOP):
		// O_NOFOLLOW on a symbolic link (open(2), ERRORS).
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("a symbolic link: %w", ErrNotRegular)}
	case errors.Is(err, unix.ENXIO):
		// A FIFO opened for writing with no reader, or a socket.
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("a FIFO or socket: %w", ErrNotRegular)}
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if err := regularBlocking(fd); err != nil {
		_ = unix.Close(fd) // the check's error is the one to report
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// regularBlocking checks that fd is a regular file and clears O_NONBLOCK.
func regularBlocking(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("file type %#o: %w", st.Mode&unix.S_IFMT, ErrNotRegular)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	return err
}

// ReadFile reads a regular file of at most limit bytes, opened as Open
// does. A longer file is an error wrapping ErrTooLarge.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only
	return ReadAll(f, limit)
}

// ReadAll reads f to its end, refusing more than limit bytes.
func ReadAll(f *os.File, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over %d bytes: %w", f.Name(), limit, ErrTooLarge)
	}
	return b, nil
}

// CheckDir returns nil if path is a trusted directory (see the package
// comment), else an error wrapping ErrUntrusted that names the directory
// and the reason.
func CheckDir(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	var reason string
	switch euid := unix.Geteuid(); {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		reason = "is a symbolic link"
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		reason = "is not a directory"
	case st.Uid != 0 && int(st.Uid) != euid:
		reason = fmt.Sprintf("is owned by uid %d, not by root or uid %d", st.Uid, euid)
	case st.Mode&0o022 != 0:
		reason = fmt.Sprintf("has mode %04o: writable by group or others", st.Mode&0o7777)
	default:
		return nil
	}
	return fmt.Errorf("directory %s %s: %w", path, reason, ErrUntrusted)
}

// MkdirAll creates path and any missing parent with mode perm, like
// os.MkdirAll, then checks path and every directory it had to create with
// CheckDir: a name that someone else made first (a symbolic link, or a
// directory of theirs) between the look and the mkdir is refused. Parents
// that existed already are the operator's choice and are not checked.
func MkdirAll(path string, perm os.FileMode) error {
	path = filepath.Clean(path)
	var made []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		made = append(made, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	if len(made) == 0 || made[0] != path {
		made = append([]string{path}, made...)
	}
	for _, p := range made {
		if err := CheckDir(p); err != nil {
			return err
		}
	}
	return nil
}

// OpenDir opens a directory for fsync(2) without following a symbolic
// link in its last component.
func OpenDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
