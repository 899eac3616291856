package disk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Lock takes an exclusive flock(2) on <dir>/lock, waiting until ctx is
// done or Options.LockTimeout has passed, then returns ErrLockTimeout. A
// holder that dies releases the lock with its file descriptor, so a crashed
// plugin cannot wedge the store.
//
// A contended lock is waited for in the kernel, which hands it to the next
// waiter the moment it is released. (Polling with LOCK_NB and a back-off, as
// this did before, left the lock idle for up to the back-off at every
// hand-over and let late-comers overtake: with 100 ADDs started at once,
// some waited out the 10 s timeout.) The blocking flock runs on its own
// goroutine, on a duplicate of the descriptor, so that the deadline can end
// the wait; a wait abandoned at the deadline releases the lock at once if
// it gets it later, and closes its duplicate.
func (s *Store) Lock(ctx context.Context) error {
	if s.locked {
		return fmt.Errorf("lock %s: already held by this store", s.dir)
	}
	fd := int(s.lockFile.Fd())
	err := flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		s.locked = true
		return nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return s.unavailable("lock", err)
	}
	timeout := s.opts.LockTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	dup, err := syscall.Dup(fd) // same open file description: same lock
	if err != nil {
		return s.unavailable("lock", err)
	}
	w := &lockWait{fd: dup, done: make(chan error, 1)}
	go w.run()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-w.done:
	case <-t.C:
		if err = w.abandon(); errors.Is(err, store.ErrLockTimeout) {
			return fmt.Errorf("lock %s after %s: %w", s.dir, s.opts.LockTimeout, err)
		}
	case <-ctx.Done():
		if err = w.abandon(); errors.Is(err, store.ErrLockTimeout) {
			return fmt.Errorf("lock %s: %w: %w", s.dir, err, ctx.Err())
		}
	}
	if err != nil {
		return s.unavailable("lock", err)
	}
	s.locked = true
	return nil
}

// lockWait is a blocking flock on a duplicate descriptor.
type lockWait struct {
	fd        int
	done      chan error
	mu        sync.Mutex
	abandoned bool
}

func (w *lockWait) run() {
	err := flock(w.fd, syscall.LOCK_EX)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.abandoned && err == nil {
		_ = flock(w.fd, syscall.LOCK_UN) // nobody wants it any more; an error leaves it to the close below
	}
	_ = syscall.Close(w.fd) // the duplicate only; the store's descriptor keeps the lock if it was taken
	if !w.abandoned {
		w.done <- err
	}
}

// abandon gives up the wait. It returns the wait's outcome if the lock
// came at the last moment, else ErrLockTimeout.
func (w *lockWait) abandon() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case err := <-w.done:
		return err
	default:
		w.abandoned = true
		return store.ErrLockTimeout
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

// Unlock releases the lock and forgets what was cached under it.
func (s *Store) Unlock() error {
	if !s.locked {
		return fmt.Errorf("unlock %s: not locked", s.dir)
	}
	clear(s.chunks)
	s.locked = false
	if err := syscall.Flock(int(s.lockFile.Fd()), syscall.LOCK_UN); err != nil {
		return s.unavailable("unlock", err)
	}
	return nil
}
