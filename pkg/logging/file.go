package logging

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LogSuffix ends every log file's name.
const LogSuffix = ".log"

// OpenFile opens path for appending log lines, creating it 0600. The plugins
// run as root and "logFile" comes from the network's configuration, whose
// author may be less trusted than root, so the file must be one that only
// serves as a log:
//   - path is absolute and its name ends in ".log" (so it cannot be a file
//     that something else reads as configuration or code:
//     /etc/ld.so.preload, a shell profile, a /proc/sys knob);
//   - its directory is owned by root or by the plugin's own effective user
//     (the same in production; it lets tests run unprivileged) and is not
//     writable by group or others, so nobody else can swap the file;
//   - the last component is not a symbolic link (O_NOFOLLOW) and is a
//     regular file (a FIFO or device is refused before it is opened, and
//     O_NONBLOCK keeps a FIFO swapped in meanwhile from hanging the open).
//
// The directory is opened once and the file opened relative to it
// (openat), so the directory checked is the directory used.
func OpenFile(path string) (*os.File, error) {
	path, err := absolute(path)
	if err != nil {
		return nil, err
	}
	dir, name := filepath.Split(path)
	if !strings.HasSuffix(name, LogSuffix) || name == LogSuffix {
		return nil, fmt.Errorf("%q: the file name must end in %q", path, LogSuffix)
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%q: directory: %w", path, err)
	}
	defer unix.Close(dfd)
	if err := checkDir(dfd); err != nil {
		return nil, fmt.Errorf("%q: directory %q %w", path, dir, err)
	}
	var st unix.Stat_t
	err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		if err := regular(&st); err != nil {
			return nil, fmt.Errorf("%q: %w", path, err)
		}
	}
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	if err := finishOpen(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// checkDir: owned by root or by us, and not writable by group or others.
func checkDir(dfd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return err
	}
	if euid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != euid {
		return fmt.Errorf("is owned by uid %d, not by root (or uid %d)", st.Uid, euid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("is writable by group or others (mode %#o)", st.Mode&0o7777)
	}
	return nil
}

// finishOpen checks what was opened and makes the descriptor blocking
// again.
func finishOpen(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if err := regular(&st); err != nil {
		return err
	}
	return unix.SetNonblock(fd, false)
}

func regular(st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFLNK:
		return fmt.Errorf("is a symbolic link")
	}
	return fmt.Errorf("is not a regular file (mode %#o)", st.Mode)
}
