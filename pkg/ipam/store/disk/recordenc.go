package disk

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/maclan-cni/maclan/pkg/jsonenc"
)

// The lease and index records are encoded by hand, because of when they
// are encoded: every ADD writes both while it holds the store's lock, and
// every ADD is a new process, in which encoding/json would first build its
// encoder for each record type by reflection (about 0.2 ms here, for the
// lease alone). The lock is what a burst of ADDs queues on, so that time
// was paid once per container, one container after the other. The bytes
// are exactly those json.Marshal writes (TestRecordEncodersMatchJSON,
// FuzzEncodeLease), so old and new records cannot be told apart; anything
// these encoders do not cover (text that is not UTF-8, a year outside
// 0-9999) is left to json.Marshal.

// appendJSONTime appends t as time.Time's MarshalJSON does for the UTC
// times the store writes: RFC 3339 with nanoseconds, trailing zeros cut.
func appendJSONTime(b []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 || t.Location() != time.UTC {
		return b, false
	}
	b = append(b, '"')
	return append(t.AppendFormat(b, time.RFC3339Nano), '"'), true
}

// recordEncoder appends one JSON object, a field at a time, and remembers
// whether every field could be encoded by hand.
type recordEncoder struct {
	b  []byte
	ok bool
}

func newRecordEncoder() *recordEncoder {
	return &recordEncoder{b: append(make([]byte, 0, 384), '{'), ok: true}
}

func (e *recordEncoder) key(k string) {
	if len(e.b) > 1 {
		e.b = append(e.b, ',')
	}
	e.b = append(append(append(e.b, '"'), k...), '"', ':')
}

func (e *recordEncoder) int(k string, v int) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, int64(v), 10)
}

func (e *recordEncoder) str(k, v string) {
	e.key(k)
	var ok bool
	e.b, ok = jsonenc.AppendString(e.b, v)
	e.ok = e.ok && ok
}

func (e *recordEncoder) strOmitEmpty(k, v string) {
	if v != "" {
		e.str(k, v)
	}
}

func (e *recordEncoder) time(k string, t time.Time) {
	e.key(k)
	var ok bool
	e.b, ok = appendJSONTime(e.b, t)
	e.ok = e.ok && ok
}

func (e *recordEncoder) strs(k string, vs []string) {
	e.key(k)
	var ok bool
	e.b, ok = jsonenc.AppendStrings(e.b, vs)
	e.ok = e.ok && ok
}

// done ends the object and the line; v is what json.Marshal encodes when
// a field could not be encoded by hand.
func (e *recordEncoder) done(v any) []byte {
	if !e.ok {
		b, _ := json.Marshal(v) // plain strings and times: cannot fail
		return append(b, '\n')
	}
	return append(e.b, '}', '\n')
}

// encode is the lease record's JSON and a newline.
func (r *leaseRecord) encode() []byte {
	e := newRecordEncoder()
	e.int("v", r.Version)
	e.str("ip", r.IP)
	e.str("containerID", r.ContainerID)
	e.str("ifName", r.IfName)
	e.time("created", r.Created)
	e.strOmitEmpty("conflict", r.Conflict)
	e.strOmitEmpty("host", r.Host)
	e.strOmitEmpty("boot", r.Boot)
	e.strOmitEmpty("netns", r.Netns)
	e.strOmitEmpty("workload", r.Workload)
	e.strOmitEmpty("workloadUID", r.WorkloadUID)
	if !r.Released.IsZero() {
		e.time("released", r.Released)
	}
	e.str("crc32c", r.Sum)
	return e.done(r)
}

// encode is the index record's JSON and a newline.
func (r *attachRecord) encode() []byte {
	e := newRecordEncoder()
	e.int("v", r.Version)
	e.str("containerID", r.ContainerID)
	e.str("ifName", r.IfName)
	e.strs("ips", r.IPs)
	e.str("crc32c", r.Sum)
	return e.done(r)
}
