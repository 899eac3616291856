package etcdtest

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// Cluster is several members of one etcd cluster, started together.
type Cluster struct {
	Members []*Server
}

// StartCluster starts one member per entry of members, all of one cluster
// (it sets Name, default "m<i>", and InitialCluster of each), and waits
// until every member answers its health probe. Each member needs its own
// ClientAddr and PeerAddr. Every member is killed when t ends.
func StartCluster(t testing.TB, members []Options) *Cluster {
	t.Helper()
	var peers []string
	for i := range members {
		m := &members[i]
		if m.ClientAddr == "" || m.PeerAddr == "" {
			t.Fatalf("etcdtest: member %d: a cluster member needs ClientAddr and PeerAddr", i)
		}
		if m.Name == "" {
			m.Name = fmt.Sprintf("m%d", i)
		}
		peers = append(peers, m.Name+"="+m.scheme()+"://"+m.PeerAddr)
	}
	c := &Cluster{}
	for _, m := range members {
		m.InitialCluster = strings.Join(peers, ",")
		c.Members = append(c.Members, newServer(t, m))
	}
	for _, s := range c.Members {
		if err := s.launch(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.Members {
		if err := s.waitHealthy(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, s := range c.Members {
		eps[i] = s.Endpoint()
	}
	return eps
}

// Pid is the process ID of a running member, 0 if it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Exited reports whether the member's process has exited on its own (or
// was killed) since it was started.
func (s *Server) Exited() bool {
	s.mu.Lock()
	gone := s.gone
	s.mu.Unlock()
	if gone == nil {
		return true
	}
	select {
	case <-gone:
		return true
	default:
		return false
	}
}

// Freeze stops the member with SIGSTOP, as a stalled disk or a paused VM
// does: its sockets stay open and nothing answers. Thaw undoes it; Stop
// kills a frozen member too.
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw continues a member stopped by Freeze (SIGCONT).
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("etcdtest: not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("etcdtest: signal %v to etcd %s: %w", sig, s.opts.Name, err)
	}
	return nil
}

// Start starts a member that was stopped (Stop) or that exited, on the
// same addresses and data, and waits for its health probe. Unlike Restart
// it reports the error rather than failing the test, for a member whose
// cluster is still short of quorum (its probe then times out).
func (s *Server) Start() error {
	s.reap()
	return s.start()
}

// reap forgets a process that exited on its own.
func (s *Server) reap() {
	if s.Exited() {
		s.Stop()
	}
}

// Launch starts a stopped member without waiting for it to answer; then
// WaitHealthy waits. Members restarted together after a quorum loss need
// this: none answers until enough of them run.
func (s *Server) Launch() error {
	s.reap()
	return s.launch()
}

// WaitHealthy waits for the member's health probe (see Options.Health).
func (s *Server) WaitHealthy() error { return s.waitHealthy() }
