package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/maclan-cni/maclan/pkg/ipam/store"
	"github.com/maclan-cni/maclan/pkg/safefs"
)

// Leases that live as long as the boot.
//
// Every write of the store is normally made durable before the next one
// (fsync of the file, then of its directory), four fsyncs per ADD, which
// are most of an ADD's time in the IPAM. For a lease of this host and
// boot they buy nothing when the leases of an earlier boot are released at
// the next boot anyway and none is to become a sticky hold (the plugin's
// reclaimAfterReboot, on by default, and stickyFor, off by default):
//
//   - a plugin that crashes or is killed loses nothing: its writes are in
//     the kernel's page cache, which every later reader sees, in the order
//     they were made, so the states it can leave are those of the package
//     comment;
//   - a power cut or kernel crash can lose or tear any write not yet
//     written back, but it also ends every container of the boot, whose
//     leases the next boot releases.
//
// What the power cut can leave must still be repaired before the store is
// used again: a bitmap bit set for a lease that never reached the disk
// would keep an address from being handed out, and a lease file can be
// empty or torn. So before the first volatile write of a boot the store
// records the boot, durably, in a marker file of this host
// (boot-<hash of the host>, a file per host so that hosts sharing the
// directory do not take each other's boots for reboots). The first lock
// taken in any later boot finds the marker naming another boot and runs
// fsck --repair (temporary files removed, damaged leases restored for
// their sole claimant, as leases of the boot that ended so that the sweep
// gives them back, or else quarantined; index and bitmap rebuilt from the
// lease files; every repair durable) before anything reads the store. The
// sweep after the reboot then releases the leases of the earlier boot as
// always. A repair that fails is logged and the store used as it is: what
// it could not mend keeps addresses from being handed out, never hands one
// out twice, where failing every call would take the network down.
//
// Conflict records and sticky holds, which must outlive the boot, leases
// of other hosts or boots, and every write of fsck, Import and the sweep
// stay durable.

// Boot identifies this host and boot, as the leases record them.
type Boot struct {
	Host string
	ID   string
}

func (b Boot) known() bool { return b.Host != "" && b.ID != "" }

// bootMarker is the name of this host's marker file in the store.
func bootMarker(host string) string {
	sum := sha256.Sum256([]byte(host))
	return "boot-" + hex.EncodeToString(sum[:8])
}

// volatile reports whether l may be written without fsync: a container's
// lease of exactly this host and boot, in a store opened Volatile.
func (s *Store) volatile(l store.Lease) bool {
	b := s.opts.Boot
	return s.opts.Volatile && b.known() && l.Host == b.Host && l.Boot == b.ID &&
		l.Conflict == "" && !l.IsSticky()
}

// checkBoot runs once per Store, under the lock: it repairs the store if
// this host wrote to it without fsync in a boot that has ended, and
// records this boot before any volatile write of it.
func (s *Store) checkBoot() error {
	b := s.opts.Boot
	if s.bootChecked || !b.known() {
		return nil
	}
	name := bootMarker(b.Host)
	data, err := safefs.ReadFile(filepath.Join(s.dir, name), maxCursorSize)
	was := strings.TrimSpace(string(data))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		was = ""
	case planted(err):
		was = "(unreadable marker)"
	case err != nil:
		return s.unavailable("read boot marker "+name, err)
	}
	if was == b.ID {
		s.bootChecked = true
		return nil
	}
	if was != "" {
		// A repair that fails leaves what it could not mend, which loses
		// addresses (a bit without a lease, a damaged lease) but never
		// hands one out twice; failing every call of the boot instead
		// would take the network down. So it is logged, once, and the
		// boot recorded.
		if err := s.repairAfterBoot(Boot{Host: b.Host, ID: was}); err != nil {
			s.log.Error("repairing the store after the end of a boot failed; addresses may stay blocked until 'maclan-ipam fsck --repair' is run",
				"boot", was, "err", err)
		}
	}
	var werr error
	if s.opts.Volatile {
		werr = s.writeFile("", name, []byte(b.ID+"\n"), true)
	} else if was != "" {
		werr = s.removeFile("", name) // nothing volatile any more to repair
	}
	if werr != nil {
		return s.unavailable("record this boot in "+name, werr)
	}
	s.bootChecked = true
	return nil
}

// repairAfterBoot makes good what a power cut during boot may have left
// of the writes made there without fsync (see above).
func (s *Store) repairAfterBoot(ended Boot) error {
	rep, err := s.fsck(true, ended)
	if err != nil {
		return fmt.Errorf("repair after the end of boot %s: %w", ended.ID, err)
	}
	s.log.Info("this host wrote leases here without fsync in a boot that has ended; repaired what a power cut may have left",
		"boot", ended.ID, "problems", len(rep.Problems))
	for _, p := range rep.Problems {
		s.log.Warn("repaired after the end of a boot", "kind", p.Kind, "where", p.Where, "detail", p.Detail)
	}
	return nil
}
