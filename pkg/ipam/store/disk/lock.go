package disk

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/maclan-cni/maclan/pkg/flock"
	"github.com/maclan-cni/maclan/pkg/ipam/store"
)

// Lock takes an exclusive flock(2) on <dir>/lock, waiting in the kernel
// (see package flock) until ctx is done or Options.LockTimeout has passed,
// then returns ErrLockTimeout. A holder that dies releases the lock with its
// file descriptor, so a crashed plugin cannot wedge the store.
func (s *Store) Lock(ctx context.Context) error {
	if s.locked {
		return fmt.Errorf("lock %s: already held by this store", s.dir)
	}
	deadline := time.Now().Add(s.opts.LockTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	err := flock.Wait(s.lockFile, deadline, ctx.Done())
	switch {
	case errors.Is(err, flock.ErrTimeout) && ctx.Err() != nil:
		return fmt.Errorf("lock %s: %w: %w", s.dir, store.ErrLockTimeout, ctx.Err())
	case errors.Is(err, flock.ErrTimeout):
		return fmt.Errorf("lock %s after %s: %w", s.dir, s.opts.LockTimeout, store.ErrLockTimeout)
	case err != nil:
		return s.unavailable("lock", err)
	}
	s.locked = true
	if err := s.checkBoot(); err != nil {
		return errors.Join(err, s.Unlock())
	}
	return nil
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
