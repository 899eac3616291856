package disk

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

// marshalled is what the records were before they were encoded by hand.
func marshalled(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestRecordEncodersMatchJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 14, 7, 52, 123456780, time.UTC)
	odd := "a\"b\\c\b\f\n\r\t\x00\x1f\x7f<>&\u2028\u2029é€𝄞"
	for name, r := range map[string]leaseRecord{
		"plain":        {Version: 2, IP: "10.0.0.2", ContainerID: "c1", IfName: "eth0", Created: at, Sum: "0123abcd"},
		"every field":  {Version: 2, IP: "2001:db8::1", ContainerID: "c1", IfName: "eth0", Created: at, Conflict: "02:00:00:00:00:01", Host: "h", Boot: "b", Netns: "/var/run/netns/x", Workload: "k8s/ns/pod", WorkloadUID: "u", Released: at.Add(time.Second), Sum: "x"},
		"escapes":      {Version: 2, IP: "10.0.0.3", ContainerID: "c", IfName: "e", Created: time.Unix(0, 0).UTC(), Netns: odd, Workload: odd, Sum: "s"},
		"whole second": {Version: 1, IP: "10.0.0.4", Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		"not UTF-8":    {Version: 2, IP: "10.0.0.5", Created: at, Workload: "bad\xff\xfe"},
		"not UTC":      {Version: 2, IP: "10.0.0.6", Created: at.In(time.FixedZone("x", 3600))},
		"zero times":   {Version: 2, IP: "10.0.0.7"},
	} {
		if got, want := r.encode(), marshalled(t, &r); !bytes.Equal(got, want) {
			t.Errorf("lease %s:\n got %s\nwant %s", name, got, want)
		}
	}
	for name, r := range map[string]attachRecord{
		"none":    {Version: 1, ContainerID: "c1", IfName: "eth0", IPs: []string{}, Sum: "s"},
		"two":     {Version: 1, ContainerID: "c1", IfName: "eth0", IPs: []string{"10.0.0.2", "2001:db8::2"}, Sum: "s"},
		"escapes": {Version: 1, ContainerID: odd, IfName: "<&>", IPs: []string{odd}, Sum: odd},
	} {
		if got, want := r.encode(), marshalled(t, &r); !bytes.Equal(got, want) {
			t.Errorf("index entry %s:\n got %s\nwant %s", name, got, want)
		}
	}
}

func FuzzEncodeLease(f *testing.F) {
	f.Add("c1", "eth0", "/var/run/netns/x", "k8s/ns/pod", int64(1765030072123456789), int64(0))
	f.Add("\x00<\u2028", "\xff", "\"\\", "é", int64(-62135596800), int64(253402300799999999))
	f.Fuzz(func(t *testing.T, id, ifName, netns, workload string, created, released int64) {
		r := leaseRecord{Version: 2, IP: "10.0.0.2", ContainerID: id, IfName: ifName, Created: time.Unix(0, created).UTC(),
			Netns: netns, Workload: workload, Sum: workload}
		if released != 0 {
			r.Released = time.Unix(0, released).UTC()
		}
		want, err := json.Marshal(&r)
		if err != nil {
			return // a year json.Marshal refuses: encode falls back to it and drops the error as before
		}
		if got := r.encode(); !bytes.Equal(got, append(want, '\n')) {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
		a := attachRecord{Version: 1, ContainerID: id, IfName: ifName, IPs: []string{netns, workload}, Sum: id}
		if got, want := a.encode(), marshalled(t, &a); !bytes.Equal(got, want) {
			t.Errorf("\n got %s\nwant %s", got, want)
		}
	})
}

// TestCastagnoliTable: the store's own CRC-32C table sums as crc32's, so
// records written before it was made here keep their checksums.
func TestCastagnoliTable(t *testing.T) {
	std := crc32.MakeTable(crc32.Castagnoli)
	for _, s := range []string{"", "a", "123456789", strings.Repeat("lease record\x00", 40)} {
		if got, want := crc32.Checksum([]byte(s), castagnoli()), crc32.Checksum([]byte(s), std); got != want {
			t.Errorf("CRC-32C of %q: got %08x, want %08x", s, got, want)
		}
	}
	// The check value of CRC-32C (RFC 3720, appendix B.4).
	if got := crc32.Checksum([]byte("123456789"), castagnoli()); got != 0xe3069283 {
		t.Errorf("CRC-32C check value: got %08x, want e3069283", got)
	}
}
