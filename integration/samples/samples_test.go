package samples

import (
	"testing"
	"time"
)

func TestAddTo(t *testing.T) {
	m := map[string]*Series{}
	AddTo(m, "maclan ADD", 1500*time.Microsecond, 2*time.Millisecond)
	AddTo(m, "maclan ADD", 3*time.Millisecond, 4*time.Millisecond)
	s := m["maclan ADD"]
	if s == nil || len(m) != 1 {
		t.Fatalf("series = %v, want one series named maclan ADD", m)
	}
	if want := []int64{1500, 3000}; len(s.WallUS) != 2 || s.WallUS[0] != want[0] || s.WallUS[1] != want[1] {
		t.Errorf("WallUS = %v, want %v", s.WallUS, want)
	}
	if want := []int64{2000, 4000}; len(s.CPUUS) != 2 || s.CPUUS[0] != want[0] || s.CPUUS[1] != want[1] {
		t.Errorf("CPUUS = %v, want %v", s.CPUUS, want)
	}
}
