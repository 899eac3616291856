// Package etcdtest starts real etcd servers for tests: the `etcd` binary
// found on PATH (Debian's etcd-server package), by default one member
// listening on loopback ports with a temporary data directory; StartCluster
// starts several members together, and NewPKI makes the certificates of a
// cluster that speaks TLS to clients and peers. A server is stopped and its
// directory removed when the test ends, and it dies with the test binary if
// that is killed.
package etcdtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the path of the etcd binary: $MACLAN_ETCD_BIN, else
// `etcd` on PATH, else /usr/bin/etcd; "" if there is none.
func Binary() string {
	if p := os.Getenv("MACLAN_ETCD_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	return ""
}

// Options place the server. The zero value picks two free ports on
// 127.0.0.1 of the test's own network namespace.
type Options struct {
	// ClientAddr and PeerAddr are host:port to listen on. Both or neither.
	ClientAddr, PeerAddr string
	// Wrap, if set, prefixes the command line (for example with
	// `ip netns exec NAME` to run the server in another namespace).
	Wrap []string
	// Args are added to etcd's command line (timeouts for a loaded
	// machine, for example).
	Args []string
	// Health probes the client URL; needed when the server runs where the
	// test cannot connect, and then it must run a probe from there. Nil
	// uses an HTTP GET of /health from the test process.
	Health func(clientURL string) error

	// Name is the member's name (default "test"); InitialCluster is
	// etcd's --initial-cluster (default: this member alone). StartCluster
	// sets both.
	Name, InitialCluster string
	// TLS, if set, makes the member speak TLS to clients and peers and
	// require a client certificate signed by TLS.CA from both.
	TLS *ServerTLS
	// MetricsAddr, if set, is host:port of a plain-HTTP listener for
	// /metrics and /health (--listen-metrics-urls), which needs no client
	// certificate.
	MetricsAddr string
	// DataDir, if set, is the member's data directory (a small tmpfs, for
	// example); default a new temporary directory.
	DataDir string
}

// ServerTLS names the PEM files of a member: its certificate and key (used
// for both its client and its peer listener) and the CA that client and
// peer certificates must be signed by.
type ServerTLS struct {
	CA, Cert, Key string
}

func (o *Options) scheme() string {
	if o.TLS != nil {
		return "https"
	}
	return "http"
}

// Server is a running (or stopped) etcd.
type Server struct {
	t       testing.TB
	opts    Options
	dataDir string

	mu    sync.Mutex
	cmd   *exec.Cmd
	waitc chan error    // receives the exit of cmd
	gone  chan struct{} // closed when cmd has exited
	out   *bytes.Buffer // the server's own log, shown when a test fails
}

// startTimeout bounds the wait for a new server to answer; a hang guard,
// not a performance threshold.
const startTimeout = 30 * time.Second

// Start starts a server for t, or skips t if no etcd binary is installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := newServer(t, opts)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// newServer checks opts, fills in the defaults and registers the cleanup,
// without starting anything.
func newServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if Binary() == "" {
		t.Skip("no etcd binary found (install Debian's etcd-server, or set MACLAN_ETCD_BIN); skipping the etcd store tests")
	}
	if (opts.ClientAddr == "") != (opts.PeerAddr == "") {
		t.Fatal("etcdtest: set both ClientAddr and PeerAddr, or neither")
	}
	if opts.ClientAddr == "" {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		opts.ClientAddr, opts.PeerAddr = ports[0], ports[1]
	}
	if opts.Name == "" {
		opts.Name = "test"
	}
	if opts.InitialCluster == "" {
		opts.InitialCluster = opts.Name + "=" + opts.scheme() + "://" + opts.PeerAddr
	}
	s := &Server{t: t, opts: opts, dataDir: opts.DataDir}
	if s.dataDir == "" {
		s.dataDir = t.TempDir()
	}
	if err := os.Chmod(s.dataDir, 0o700); err != nil { // etcd warns about anything wider
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("etcd %s log:\n%s", s.opts.Name, s.out.String())
			s.mu.Unlock()
		}
	})
	return s
}

// Endpoint is the client URL, http://host:port or https://host:port.
func (s *Server) Endpoint() string { return s.opts.scheme() + "://" + s.opts.ClientAddr }

// Name is the member's name.
func (s *Server) Name() string { return s.opts.Name }

// MetricsURL is the plain-HTTP metrics URL, "" without Options.MetricsAddr.
func (s *Server) MetricsURL() string {
	if s.opts.MetricsAddr == "" {
		return ""
	}
	return "http://" + s.opts.MetricsAddr
}

// DataDir is the member's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// freePorts returns n distinct loopback addresses with ports that were free
// a moment ago. A port taken in between makes start fail with a clear log.
func freePorts(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close() // only reserved the number
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: pick a port: %w", err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func (s *Server) start() error {
	if err := s.launch(); err != nil {
		return err
	}
	return s.waitHealthy()
}

// args is the member's command line, without Wrap.
func (s *Server) args() []string {
	client, peer := s.Endpoint(), s.opts.scheme()+"://"+s.opts.PeerAddr
	args := []string{
		Binary(),
		"--name", s.opts.Name,
		"--data-dir", s.dataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", s.opts.InitialCluster,
		"--initial-cluster-state", "new", // ignored once the data directory holds a member
		"--logger", "zap", "--log-level", "warn",
	}
	if c := s.opts.TLS; c != nil {
		args = append(args,
			"--cert-file", c.Cert, "--key-file", c.Key, "--trusted-ca-file", c.CA, "--client-cert-auth",
			"--peer-cert-file", c.Cert, "--peer-key-file", c.Key, "--peer-trusted-ca-file", c.CA, "--peer-client-cert-auth")
	}
	if s.opts.MetricsAddr != "" {
		args = append(args, "--listen-metrics-urls", s.MetricsURL())
	}
	return append(args, s.opts.Args...)
}

// launch starts the process without waiting for it to answer: the members
// of a new cluster answer only once enough of them run.
func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("etcdtest: already running")
	}
	args := s.args()
	args = append(append([]string{}, s.opts.Wrap...), args...)
	cmd := exec.Command(args[0], args[1:]...)
	if s.out == nil {
		s.out = &bytes.Buffer{}
	}
	cmd.Stdout, cmd.Stderr = lockedWriter{&s.mu, s.out}, lockedWriter{&s.mu, s.out}
	// The server dies with the test binary even if no cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcdtest: start %s: %w", strings.Join(args, " "), err)
	}
	s.cmd = cmd
	exited, gone := make(chan error, 1), make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(gone)
	}()
	s.waitc, s.gone = exited, gone
	return nil
}

// waitHealthy polls the health probe until it passes, the process exits or
// startTimeout passes.
func (s *Server) waitHealthy() error {
	health := s.opts.Health
	if health == nil {
		health = httpHealth
	}
	client := s.Endpoint()
	deadline := time.Now().Add(startTimeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	exited := s.waitc
	if exited == nil {
		return errors.New("etcdtest: not running")
	}
	for {
		s.mu.Unlock()
		err := health(client)
		s.mu.Lock()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			s.cmd, s.waitc = nil, nil
			return fmt.Errorf("etcdtest: etcd %s exited before answering: %v\n%s", s.opts.Name, werr, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcdtest: etcd at %s not healthy after %s: %w", client, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a readiness probe
	}
}

// Stop kills the server (SIGKILL: as abrupt as a crash or a power cut) and
// waits for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, waitc := s.cmd, s.waitc
	s.cmd, s.waitc = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // already gone: nothing to kill
	<-waitc
}

// Restart starts a stopped server again on the same ports and data.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// httpHealth asks etcd's /health endpoint.
func httpHealth(clientURL string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(clientURL + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close() //nolint:errcheck // read-only
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body) // a short read shows as an unhealthy answer
	if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), `"health":"true"`) {
		return fmt.Errorf("etcd /health: %s %s", resp.Status, strings.TrimSpace(b.String()))
	}
	return nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

// Write is called by exec's copying goroutines, never under s.mu by the
// same goroutine.
func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
