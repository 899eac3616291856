package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/maclan-cni/maclan/pkg/safefs"
)

// The allocation bitmap is the store's fast answer to "which address after
// this one is free": one bit per address, in chunks of 65,536 addresses
// aligned on the low 16 bits of the address, one file per chunk that has
// ever held a lease (bitmap/<first address of the chunk>). A walk reads one
// 8 KiB chunk for every 65,536 addresses it passes over, so its cost does
// not depend on how many leases lie in its way: the reference host-local
// stats one file per address instead.
//
// The bitmap is a summary of leases/, never the truth. Its one invariant is
// that a set bit means a lease file exists; a clear bit may be stale (a
// lease written just before a crash), which costs at most one failed
// create-if-absent, after which Reserve sets the bit. Writers keep the
// invariant by ordering: a lease is made durable before its bit is set,
// and a bit is cleared durably before its lease is removed. (For the
// leases of this boot, written without fsync, the order holds for every
// other process but not across a power cut; the repair at the next boot
// rebuilds the bitmap from the lease files: boot.go.)
//
// A chunk file is created whole (temporary file, fsync, rename) and then
// updated in place: the changed 8-byte words are written with pwrite(2)
// and the file fdatasync(2)ed. An aligned 8-byte write never straddles a
// sector, so a crash leaves each word old or new. A chunk file of the
// wrong size or magic, or that is not a regular file, is rebuilt from the
// lease file names; fsck compares every chunk with the leases and rebuilds
// what disagrees.
//
// A chunk whose last bit is cleared is deleted, so that the bitmap does not
// keep 8 KiB for every chunk ever touched (static IPv6 addresses across a
// /64 would touch a new chunk each). The clear is written and synced in
// place first, and only then is the file unlinked, without a sync: a crash
// that undoes the unlink brings back an all-clear file, which is correct
// (and which fsck --repair deletes). So a set bit still never outlives its
// lease, whose removal comes after.
const (
	chunkBits   = 16
	chunkAddrs  = 1 << chunkBits
	chunkWords  = chunkAddrs / 64
	bitmapMagic = "MLB2"
	chunkSize   = len(bitmapMagic) + chunkWords*8
)

type chunk struct {
	words  [chunkWords]uint64
	onDisk bool         // the file exists with this content but for dirty
	dirty  map[int]bool // words changed since read
}

func chunkBase(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		a := ip.As4()
		a[2], a[3] = 0, 0
		return netip.AddrFrom4(a)
	}
	a := ip.As16()
	a[14], a[15] = 0, 0
	return netip.AddrFrom16(a)
}

func chunkIndex(ip netip.Addr) int {
	s := ip.AsSlice()
	return int(s[len(s)-2])<<8 | int(s[len(s)-1])
}

func chunkAddr(base netip.Addr, i int) netip.Addr {
	s := base.AsSlice()
	s[len(s)-2], s[len(s)-1] = byte(i>>8), byte(i)
	a, _ := netip.AddrFromSlice(s) // same length as base: always valid
	return a
}

// nextChunk returns the first address of the chunk after ip's, or an
// invalid address at the end of the address space.
func nextChunk(ip netip.Addr) netip.Addr { return chunkAddr(chunkBase(ip), chunkAddrs-1).Next() }

func (c *chunk) get(i int) bool { return c.words[i/64]&(1<<(i%64)) != 0 }

func (c *chunk) set(i int, v bool) {
	if c.dirty == nil {
		c.dirty = map[int]bool{}
	}
	c.dirty[i/64] = true
	if v {
		c.words[i/64] |= 1 << (i % 64)
	} else {
		c.words[i/64] &^= 1 << (i % 64)
	}
}

// firstZero returns the lowest clear bit in [from, to].
func (c *chunk) firstZero(from, to int) (int, bool) {
	for w := from / 64; w <= to/64; w++ {
		free := ^c.words[w]
		if w == from/64 {
			free &= ^uint64(0) << (from % 64)
		}
		if free == 0 {
			continue
		}
		i := w*64 + bits.TrailingZeros64(free)
		if i > to {
			return 0, false
		}
		return i, true
	}
	return 0, false
}

func (c *chunk) empty() bool {
	for _, w := range c.words {
		if w != 0 {
			return false
		}
	}
	return true
}

func (c *chunk) marshal() []byte {
	b := make([]byte, 0, chunkSize)
	b = append(b, bitmapMagic...)
	for _, w := range c.words {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

func (c *chunk) unmarshal(b []byte) error {
	if len(b) != chunkSize || !bytes.HasPrefix(b, []byte(bitmapMagic)) {
		return fmt.Errorf("%d bytes, want %d with magic %q", len(b), chunkSize, bitmapMagic)
	}
	for i := range c.words {
		c.words[i] = binary.LittleEndian.Uint64(b[len(bitmapMagic)+8*i:])
	}
	return nil
}

// equal compares the bits only.
func (c *chunk) equal(o *chunk) bool { return c.words == o.words }

// chunk returns the chunk of base, from the cache kept while the lock is
// held, from its file, or rebuilt from the lease names if the file is
// damaged.
func (s *Store) chunk(base netip.Addr) (*chunk, error) {
	if c, ok := s.chunks[base]; ok {
		return c, nil
	}
	c := new(chunk)
	b, err := safefs.ReadFile(filepath.Join(s.dir, bitmapDir, base.String()), int64(chunkSize))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Never written, or emptied: no lease in this chunk.
	case err != nil && !planted(err):
		return nil, s.unavailable("read bitmap chunk "+base.String(), err)
	default:
		uerr := err
		if uerr == nil {
			c.onDisk = true
			uerr = c.unmarshal(b)
		}
		if uerr != nil {
			s.log.Warn("bitmap chunk damaged; rebuilding it from the lease files", "chunk", base, "err", uerr)
			if c, err = s.rebuildChunk(base); err != nil {
				return nil, err
			}
			if err := s.writeChunk(base, c, false); err != nil {
				return nil, err
			}
		}
	}
	s.chunks[base] = c
	return c, nil
}

func (s *Store) rebuildChunk(base netip.Addr) (*chunk, error) {
	names, err := s.leaseNames()
	if err != nil {
		return nil, err
	}
	c := new(chunk)
	for _, ip := range names {
		if chunkBase(ip) == base {
			c.set(chunkIndex(ip), true)
		}
	}
	return c, nil
}

// writeChunk makes the chunk's file match c durably: in place when the
// file exists, else by creating it whole; an empty chunk's file is then
// deleted (see above for why in that order).
func (s *Store) writeChunk(base netip.Addr, c *chunk, volatile bool) error {
	switch {
	case c.onDisk && len(c.dirty) > 0:
		if err := s.patchChunk(base, c, volatile); err != nil {
			return s.unavailable("update bitmap chunk "+base.String(), err)
		}
	case c.empty():
		// Nothing to write: no file is all clear. Any file there is
		// damaged (or was never synced) and is removed below.
	default:
		if err := s.writeFile(bitmapDir, base.String(), c.marshal(), !volatile); err != nil {
			return s.unavailable("write bitmap chunk "+base.String(), err)
		}
	}
	c.onDisk, c.dirty = true, nil
	if c.empty() {
		if err := s.removeFile(bitmapDir, base.String()); err != nil {
			return s.unavailable("remove empty bitmap chunk "+base.String(), err)
		}
		c.onDisk = false
	}
	return nil
}

func (s *Store) patchChunk(base netip.Addr, c *chunk, volatile bool) error {
	f, err := safefs.Open(filepath.Join(s.dir, bitmapDir, base.String()), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var w [8]byte
	for i := range c.dirty {
		binary.LittleEndian.PutUint64(w[:], c.words[i])
		if _, err := f.WriteAt(w[:], int64(len(bitmapMagic)+8*i)); err != nil {
			_ = f.Close() // the write error is the one to report
			return err
		}
	}
	if volatile {
		return f.Close()
	}
	s.syncs++
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		_ = f.Close() // the sync error is the one to report
		return err
	}
	return f.Close()
}

// setBits sets or clears the bits of ips and writes each changed chunk
// durably before returning, which is what the ordering described above
// relies on; volatile only writes them (see Options.Volatile).
func (s *Store) setBits(ips []netip.Addr, v, volatile bool) error {
	changed := map[netip.Addr]*chunk{}
	for _, ip := range ips {
		base := chunkBase(ip)
		c, err := s.chunk(base)
		if err != nil {
			return err
		}
		if c.get(chunkIndex(ip)) != v {
			c.set(chunkIndex(ip), v)
			changed[base] = c
		}
	}
	for base, c := range changed {
		if err := s.writeChunk(base, c, volatile); err != nil {
			delete(s.chunks, base) // the cached copy no longer matches the file
			return err
		}
	}
	return nil
}
