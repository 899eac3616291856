// Package samples is the file format of the benchmarks: what
// integration/bench_test.go and bench/ipamscale write and bench/report
// reads. Times are in microseconds. It lives in the main module, beside its
// writer TestBench, so that there is one definition: the bench module
// (bench/go.mod) imports it through its replace directive.
package samples

import "time"

// Report is what TestBench writes.
type Report struct {
	Started   string             `json:"started"`
	Host      string             `json:"host"`
	Workloads []*Workload        `json:"workloads"`
	Parallel  []*ParallelRound   `json:"parallel,omitempty"`
	Trace     map[string][]int64 `json:"trace,omitempty"` // step -> µs per call
	IPAM      *IPAM              `json:"ipam,omitempty"`  // bench/ipamscale -json
}

// Workload is one timed operation of both flavours.
type Workload struct {
	Name  string             `json:"name"`
	Ops   map[string]*Series `json:"ops"` // flavour ("maclan", "reference") -> samples
	Notes []string           `json:"notes,omitempty"`
}

// Series holds the wall and CPU (user+system of the child and its
// children, from wait4) time of each call.
type Series struct {
	WallUS []int64 `json:"wallUS"`
	CPUUS  []int64 `json:"cpuUS"`
}

// Add appends one call.
func (s *Series) Add(wall, cpu time.Duration) {
	s.WallUS = append(s.WallUS, wall.Microseconds())
	s.CPUUS = append(s.CPUUS, cpu.Microseconds())
}

// AddTo appends one call to the series named op in m, making it if needed.
func AddTo(m map[string]*Series, op string, wall, cpu time.Duration) {
	if m[op] == nil {
		m[op] = &Series{}
	}
	m[op].Add(wall, cpu)
}

// ParallelRound is one round of N calls launched at once.
type ParallelRound struct {
	Flavour  string `json:"flavour"`
	Op       string `json:"op"`
	N        int    `json:"n"`
	WallUS   int64  `json:"wallUS"`
	CPUUS    int64  `json:"cpuUS"` // summed over the N processes
	Failures int    `json:"failures"`
	Dups     int    `json:"duplicates"`
}

// IPAM is bench/ipamscale's -json output: per lease count, the samples of
// each binary.
type IPAM struct {
	Rounds int     `json:"rounds"`
	Sizes  []*Size `json:"sizes"`
	// Sweep is the cost of the first call after a reboot, which gives back
	// every lease of the earlier boot (docs/ipam.md, "Lease lifecycle").
	Sweep *Sweep `json:"sweep,omitempty"`
}

// Sweep times an ADD that sweeps Leases leases of an earlier boot (First)
// and the ADD after it (Next), which finds the sweep done.
type Sweep struct {
	Leases  int   `json:"leases"`
	FirstUS int64 `json:"firstUS"`
	NextUS  int64 `json:"nextUS"`
}

// Size holds the samples at one lease count.
type Size struct {
	Leases int                `json:"leases"`
	Ops    map[string]*Series `json:"ops"` // "maclan ADD", "reference DEL", ...
}
