// Package flock takes exclusive flock(2) locks on files with a deadline.
//
// A contended lock is waited for in the kernel, which hands it to the next
// waiter the moment it is released. (Polling with LOCK_NB and a back-off
// leaves the lock idle for up to the back-off at every hand-over and lets
// late-comers overtake: with 100 maclan-ipam ADDs started at once, some
// waited out a 10 s timeout.) The blocking flock runs on its own goroutine,
// on a duplicate of the descriptor, so that a deadline can end the wait: a
// caller whose lock holder hangs gets an error it can report (CNI's "try
// again later") instead of hanging its runtime. A wait abandoned at the
// deadline releases the lock at once if it gets it later. A holder that
// dies releases the lock with its file descriptor.
package flock

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrTimeout: the lock was not obtained before the deadline.
var ErrTimeout = errors.New("timed out waiting for lock")

// Lock opens path (creating it, mode 0600) and locks it exclusively, waiting
// at most timeout. It returns the function that releases the lock.
func Lock(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := Wait(f, time.Now().Add(timeout), nil); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the descriptor releases the lock
}

// Wait takes an exclusive lock on f, waiting until deadline or until cancel
// is closed (nil: never); both give ErrTimeout.
func Wait(f *os.File, deadline time.Time, cancel <-chan struct{}) error {
	fd := int(f.Fd())
	err := flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return wrap(err)
	}
	dup, err := syscall.Dup(fd) // same open file description: same lock
	if err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	w := &wait{fd: dup, done: make(chan error, 1)}
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
	return wrap(err)
}

func wrap(err error) error {
	if err == nil || errors.Is(err, ErrTimeout) {
		return err
	}
	return fmt.Errorf("flock: %w", err)
}

// wait is a blocking flock on a duplicate descriptor.
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
	if w.abandoned && err == nil {
		_ = flock(w.fd, syscall.LOCK_UN) // nobody wants it any more; an error leaves it to the close below
	}
	_ = syscall.Close(w.fd) // the duplicate only; the caller's descriptor keeps the lock if it was taken
	if !w.abandoned {
		w.done <- err
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
