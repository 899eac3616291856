// Package flock takes exclusive flock(2) locks on files with a deadline.
//
// A contended lock is waited for in the kernel, which hands it to the next
// waiter the moment it is released. (Polling with LOCK_NB and a back-off
// leaves the lock idle for up to the back-off at every hand-over and lets
// late-comers overtake: with 100 maclan-ipam ADDs started at once, some
// waited out a 10 s timeout.) The blocking flock runs on its own goroutine
// so that a deadline can end the wait: a caller whose lock holder hangs
// gets an error it can report (CNI's "try again later") instead of hanging
// its runtime. A holder that dies releases the lock with its file
// descriptor.
//
// flock(2) locks belong to open file descriptions, not descriptors, so the
// waiting goroutine blocks on an open file description of its own (the
// caller's file opened again), never on a duplicate of the caller's
// descriptor: a wait abandoned at the deadline may still get the lock
// later, and it then releases it by closing its description, which leaves
// alone whatever lock the caller has taken since. A wait that succeeds in
// time hands its description over to the caller's descriptor (dup3), with
// the lock on it.
package flock

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTimeout: the lock was not obtained before the deadline.
var ErrTimeout = errors.New("timed out waiting for lock")

// Lock opens path (creating it, mode 0600) and locks it exclusively, waiting
// at most timeout. It returns the function that releases the lock. path
// must name a regular file, not a symbolic link.
func Lock(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	if err := Wait(f, time.Now().Add(timeout), nil); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}

// Open opens (creating it, mode 0600) a lock file for Wait. It does not
// follow a symbolic link in the last component of path, and refuses
// anything but a regular file; the descriptor is close-on-exec. (O_NONBLOCK
// only keeps the open of a FIFO or device planted there from hanging;
// flock(2) blocks or not by LOCK_NB alone.)
func Open(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("open lock file %s: not a regular file", path)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Wait takes an exclusive lock on f, waiting until deadline or until cancel
// is closed (nil: never); both give ErrTimeout. When the lock was
// contended, f's descriptor is replaced by one on a new open file
// description of the same file, which holds the lock (close-on-exec, same
// access mode); f stays usable as before.
func Wait(f *os.File, deadline time.Time, cancel <-chan struct{}) error {
	fd := int(f.Fd())
	err := flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return wrap(err)
	}
	own, err := reopen(f)
	if err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	w := &wait{fd: own, done: make(chan error, 1)}
	go w.run()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case err = <-w.done:
	case <-t.C:
		err = w.abandon()
	case <-cancel:
		err = w.abandon()
	}
	if err != nil {
		return wrap(err)
	}
	return handOver(own, fd)
}

// handOver makes fd refer to the open file description of own, which holds
// the lock, and closes own. dup3 replaces fd atomically; the description fd
// referred to before holds no lock (its LOCK_NB failed).
func handOver(own, fd int) error {
	err := unix.Dup3(own, fd, unix.O_CLOEXEC)
	unix.Close(own) // fd now refers to the same description, which keeps the lock
	if err != nil {
		return fmt.Errorf("flock: hand the lock over: %w", err)
	}
	return nil
}

// reopen opens the file of f again, as a new open file description with
// f's access mode, through /proc/self/fd (which finds the file even if its
// name changed) or else by its name, and checks that it is the same file.
func reopen(f *os.File) (int, error) {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen %s: %w", f.Name(), err)
	}
	var want unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return -1, fmt.Errorf("reopen %s: %w", f.Name(), err)
	}
	flags := fl&unix.O_ACCMODE | unix.O_CLOEXEC | unix.O_NONBLOCK // no hanging on a FIFO
	own, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags, 0)
	if err != nil {
		own, err = unix.Open(f.Name(), flags|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("reopen %s: %w", f.Name(), err)
	}
	var got unix.Stat_t
	if err := unix.Fstat(own, &got); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		unix.Close(own)
		return -1, fmt.Errorf("reopen %s: not the same file any more", f.Name())
	}
	if err := unix.SetNonblock(own, false); err != nil {
		unix.Close(own)
		return -1, fmt.Errorf("reopen %s: %w", f.Name(), err)
	}
	return own, nil
}

func wrap(err error) error {
	if err == nil || errors.Is(err, ErrTimeout) {
		return err
	}
	return fmt.Errorf("flock: %w", err)
}

// wait is a blocking flock on an open file description of its own.
type wait struct {
	fd        int
	done      chan error
	mu        sync.Mutex
	abandoned bool
}

func (w *wait) run() {
	err := flock(w.fd, syscall.LOCK_EX)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.abandoned || err != nil {
		// Nobody wants the lock any more: closing the last descriptor of
		// this description releases it. The caller's description is
		// another one, untouched.
		_ = unix.Close(w.fd)
	}
	if !w.abandoned {
		w.done <- err // on success the caller takes w.fd over
	}
}

// abandon gives up the wait. It returns the wait's outcome if the lock
// came at the last moment, else ErrTimeout.
func (w *wait) abandon() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	default:
		w.abandoned = true
		return ErrTimeout
	}
}

// flock retries on EINTR.
func flock(fd, how int) error {
	for {
		if err := syscall.Flock(fd, how); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
