package disk

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Lock takes an exclusive flock(2) on <dir>/lock. It never blocks in the
// kernel: it polls with LOCK_NB and a short, growing back-off until ctx is
// done or Options.LockTimeout has passed, then returns ErrLockTimeout. A
// holder that dies releases the lock with its file descriptor, so a crashed
// plugin cannot wedge the store.
func (s *Store) Lock(ctx context.Context) error {
	if s.locked {
		return fmt.Errorf("lock %s: already held by this store", s.dir)
	}
	deadline := time.Now().Add(s.opts.LockTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	wait := 500 * time.Microsecond
	for {
		err := syscall.Flock(int(s.lockFile.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			s.locked = true
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return s.unavailable("lock", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("lock %s after %s: %w", s.dir, s.opts.LockTimeout, store.ErrLockTimeout)
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lock %s: %w: %w", s.dir, store.ErrLockTimeout, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Millisecond)
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
