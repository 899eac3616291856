package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockExcludesAndTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(path, time.Second)
	if err != nil {
		t.Fatalf("first Lock: %v", err)
	}
	// flock locks belong to open file descriptions, so a second open in the
	// same process contends like another process would.
	if _, err := Lock(path, 20*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("second Lock while held: got %v, want ErrTimeout", err)
	}
	unlock()
	unlock2, err := Lock(path, time.Second)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}

func TestWaitCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cancel := make(chan struct{})
	close(cancel)
	if err := Wait(f, time.Now().Add(time.Hour), cancel); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait with closed cancel: got %v, want ErrTimeout", err)
	}
}
