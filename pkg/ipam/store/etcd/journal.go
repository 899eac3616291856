package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The unsure journal. A commit whose request reached etcd but whose answer
// did not (etcd died after writing it to its log, the connection broke)
// may or may not have taken effect: the call fails with code 11, yet its
// leases may be permanent. Before failing, the call notes the records it
// tried to commit in <LockDir>/<network>.etcd-unsure; the next call on
// this host for the network, whatever it is (ADD, DEL, CHECK, GC, STATUS),
// deletes those records under the host lock before doing anything else,
// if etcd still holds them exactly as written. A runtime's DEL of the
// failed attachment would release them too; the journal makes the host
// clean up even when no DEL comes.

// unsureRecord is one lease the journal names, with its index key.
type unsureRecord struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Index string `json:"index"`
}

func (s *Store) journalPath() string {
	return filepath.Join(s.opts.LockDir, s.network+".etcd-unsure")
}

// noteUnsure adds the lease records among keys to the journal, durably.
func (s *Store) noteUnsure(keys []string) error {
	recs, err := s.readJournal()
	if err != nil {
		return err
	}
	for _, k := range keys {
		if r, ok := s.records[k]; ok {
			recs = append(recs, unsureRecord{Key: k, Value: r.value, Index: r.index})
		}
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	tmp := s.journalPath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	return os.Rename(tmp, s.journalPath())
}

func (s *Store) readJournal() ([]unsureRecord, error) {
	b, err := os.ReadFile(s.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	recs, err := decodeJournal(b)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", s.journalPath(), err)
	}
	return recs, nil
}

// decodeJournal decodes the journal's JSON list of records.
func decodeJournal(b []byte) ([]unsureRecord, error) {
	var recs []unsureRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// validRecord tells whether r names a lease key of the network under root
// and the index key of the same address: the only keys replay may delete.
func validRecord(root string, r unsureRecord) bool {
	lk, ok1 := strings.CutPrefix(r.Key, root)
	ik, ok2 := strings.CutPrefix(r.Index, root)
	l, i := parseKey(lk), parseKey(ik)
	return ok1 && ok2 && l.kind == keyLease && i.kind == keyIndex && l.ip == i.ip
}

// replayJournal deletes the records of unsure commits that etcd holds
// exactly as they were written, then the journal. If etcd does not answer,
// the journal stays for the next call; this call goes on (and will most
// likely fail on its own account).
func (s *Store) replayJournal(ctx context.Context) {
	recs, err := s.readJournal()
	if err != nil {
		s.log.Warn("unsure-commit journal unreadable; removing it", "err", err)
		_ = os.Remove(s.journalPath()) // it named only reservations of a failed call
		return
	}
	if len(recs) == 0 {
		return
	}
	for _, r := range recs {
		if !validRecord(s.root, r) {
			s.log.Warn("unsure-commit journal names keys that are not this network's; skipping them", "key", r.Key, "index", r.Index)
			continue
		}
		rctx, cancel := s.request(ctx)
		_, err := s.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.Value(r.Key), "=", r.Value)).
			Then(clientv3.OpDelete(r.Key), clientv3.OpDelete(r.Index)).
			Commit()
		cancel()
		if err != nil {
			return // etcd away: keep the journal
		}
	}
	if err := os.Remove(s.journalPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("could not remove the unsure-commit journal", "err", err)
	}
}
