package store

import "errors"

// Sentinel errors returned (wrapped with %w) by every Store backend. Callers
// test them with errors.Is; backends never leak os or client errors bare.
var (
	// ErrReserved: the address is already held by another attachment.
	ErrReserved = errors.New("address already reserved")
	// ErrNotFound: no lease exists for the address or attachment.
	ErrNotFound = errors.New("lease not found")
	// ErrLockTimeout: the store lock was not obtained before the deadline.
	ErrLockTimeout = errors.New("timed out waiting for the store lock")
	// ErrUnavailable: the store cannot be reached or written right now.
	ErrUnavailable = errors.New("store unavailable")
	// ErrCorrupt: a stored record could not be decoded.
	ErrCorrupt = errors.New("corrupt lease record")
)
