// Package flock takes exclusive flock(2) locks on files with a deadline.
//
// A lock never blocks in the kernel: it polls with LOCK_NB and a short,
// growing back-off, so that a caller whose lock holder hangs gets an error it
// can report (CNI's "try again later") instead of hanging its runtime. A
// holder that dies releases the lock with its file descriptor.
package flock

import (
	"errors"
	"fmt"
	"os"
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

// Wait takes an exclusive lock on f, polling until deadline or until cancel
// is closed (nil: never). It returns ErrTimeout in both cases.
func Wait(f *os.File, deadline time.Time, cancel <-chan struct{}) error {
	wait := 200 * time.Microsecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("flock: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return ErrTimeout
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-cancel:
			t.Stop()
			return ErrTimeout
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
}
