package ipamplugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// These tests run the built binary the way a runtime does. maclan-ipam
// makes no network system calls, so they are safe anywhere and need no
// root.

var binary string

// buildFlags are added to the go build of the binaries under test.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "maclan-ipam-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// maclan-ipam is maclan's executable run under that name (make build
	// links them); it hands etcd calls to maclan-ipam-etcd beside it.
	binary = filepath.Join(dir, "maclan-ipam")
	for _, b := range [][]string{
		{"-o", filepath.Join(dir, "maclan"), "../maclan"},
		{"-tags", "etcd", "-o", filepath.Join(dir, etcdBinary), "../maclan-ipam-etcd"},
	} {
		args := append(append([]string{"build", "-ldflags", "-X github.com/maclan-cni/maclan/plugins/maclan-ipam.buildVersion=test"}, buildFlags...), b...)
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	if err := os.Link(filepath.Join(dir, "maclan"), binary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir) // a temp dir left behind is not worth failing for
	os.Exit(code)
}

type call struct {
	cmd, id, ifName, args string
	conf                  string
	env                   []string // more of the environment
}

type outcome struct {
	stdout, stderr string
	code           int // exit status
}

func run(t *testing.T, c call) outcome {
	t.Helper()
	if c.ifName == "" {
		c.ifName = "eth0"
	}
	cmd := exec.Command(binary)
	cmd.Env = []string{
		"CNI_COMMAND=" + c.cmd, "CNI_CONTAINERID=" + c.id, "CNI_NETNS=/nonexistent/netns",
		"CNI_IFNAME=" + c.ifName, "CNI_PATH=/nonexistent", "CNI_ARGS=" + c.args,
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Stdin = strings.NewReader(c.conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	o := outcome{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		o.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o
}

// ok runs c and fails the test unless it succeeds.
func ok(t *testing.T, c call) string {
	t.Helper()
	o := run(t, c)
	if o.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", c.cmd, c.id, o.code, o.stdout, o.stderr)
	}
	return o.stdout
}

// cniError runs c, expects a CNI error and returns its code and message.
func cniError(t *testing.T, c call) (uint, string) {
	t.Helper()
	o := run(t, c)
	if o.code == 0 {
		t.Fatalf("%s %s: succeeded, want an error\nstdout: %s", c.cmd, c.id, o.stdout)
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &e); err != nil {
		t.Fatalf("%s: error output %q is not a CNI error: %v", c.cmd, o.stdout, err)
	}
	return e.Code, e.Msg
}

func netconf(version, dataDir, ipam, extra string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":"net1","type":"maclan","master":"eth0","mode":"bridge",%s"ipam":{"type":"maclan-ipam","dataDir":%q,%s}}`, version, extra, dataDir, ipam)
}

const dualStack = `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]],"routes":[{"dst":"0.0.0.0/0"}]`

func TestEveryVersion(t *testing.T) {
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			ipam := dualStack
			if v == "0.1.0" || v == "0.2.0" {
				ipam = `"ranges":[[{"subnet":"10.1.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]`
			}
			conf := netconf(v, dir, ipam, "")
			out := ok(t, call{cmd: "ADD", id: "c1", conf: conf})
			var res map[string]any
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("result %q: %v", out, err)
			}
			if res["cniVersion"] != v {
				t.Errorf("cniVersion: got %v, want %s", res["cniVersion"], v)
			}
			switch v {
			case "0.1.0", "0.2.0":
				ip4, _ := res["ip4"].(map[string]any)
				if ip4["ip"] != "10.1.0.2/24" || ip4["gateway"] != "10.1.0.1" {
					t.Errorf("ip4: got %v", res["ip4"])
				}
			default:
				ips, _ := res["ips"].([]any)
				if len(ips) != 2 || !strings.Contains(out, `"10.1.0.2/24"`) || !strings.Contains(out, `"fd00::2/64"`) {
					t.Errorf("ips: got %s", out)
				}
			}
			if v >= "0.4.0" {
				prev := strings.Replace(conf, `"ipam"`, `"prevResult":`+out+`,"ipam"`, 1)
				ok(t, call{cmd: "CHECK", id: "c1", conf: prev})
			}
			if again := ok(t, call{cmd: "ADD", id: "c1", conf: conf}); again != out {
				t.Errorf("repeated ADD: got %s, want %s", again, out)
			}
			ok(t, call{cmd: "DEL", id: "c1", conf: conf})
			ok(t, call{cmd: "DEL", id: "c1", conf: conf})
			if v >= "0.4.0" {
				if code, _ := cniError(t, call{cmd: "CHECK", id: "c1", conf: conf}); code != 999 {
					t.Errorf("CHECK after DEL: code %d, want 999", code)
				}
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "net1", "leases"))
			if len(entries) != 0 {
				t.Errorf("%d lease files left after DEL", len(entries))
			}
		})
	}
}

func TestStaticRequestsFromEverySource(t *testing.T) {
	dir := t.TempDir()
	ipam := `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`
	tests := []struct {
		name, extra, args, want string
	}{
		{"runtimeConfig.ips", `"capabilities":{"ips":true},"runtimeConfig":{"ips":["10.1.0.11/24"]},`, "", "10.1.0.11/24"},
		{"args.cni.ips", `"args":{"cni":{"ips":["10.1.0.12"]}},`, "", "10.1.0.12/24"},
		{"CNI_ARGS IP", "", "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.13,fd00::13", "fd00::13/64"},
		{"mesos", `"args":{"org.apache.mesos":{"network_info":{"ip_addresses":[{"ip_address":"10.1.0.14"}]}}},`, "", "10.1.0.14/24"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := ok(t, call{cmd: "ADD", id: fmt.Sprintf("c%d", i), args: tt.args, conf: netconf("1.0.0", dir, ipam, tt.extra)})
			if !strings.Contains(out, tt.want) {
				t.Errorf("got %s, want %s in it", out, tt.want)
			}
		})
	}
	// Held by another attachment: a clear error naming address and holder.
	_, msg := cniError(t, call{cmd: "ADD", id: "other", args: "IP=10.1.0.13", conf: netconf("1.0.0", dir, ipam, "")})
	if !strings.Contains(msg, "10.1.0.13") || !strings.Contains(msg, "c2") {
		t.Errorf("got %q, want the address and its holder named", msg)
	}
	// Outside the ranges: invalid configuration, code 7.
	if code, msg := cniError(t, call{cmd: "ADD", id: "x", args: "IP=10.9.9.9", conf: netconf("1.0.0", dir, ipam, "")}); code != 7 || !strings.Contains(msg, "10.9.9.9") {
		t.Errorf("got %d %q, want code 7 naming 10.9.9.9", code, msg)
	}
	// Malformed CNI_ARGS: code 4.
	if code, _ := cniError(t, call{cmd: "ADD", id: "x", args: "IP", conf: netconf("1.0.0", dir, ipam, "")}); code != 4 {
		t.Errorf("malformed CNI_ARGS: code %d, want 4", code)
	}
}

func TestExhaustionAndStatus(t *testing.T) {
	dir := t.TempDir()
	conf := netconf("1.1.0", dir, `"ranges":[[{"subnet":"10.1.0.0/29"}]]`, "")
	ok(t, call{cmd: "STATUS", conf: conf})
	for i := range 5 {
		ok(t, call{cmd: "ADD", id: fmt.Sprintf("c%d", i), conf: conf})
	}
	if _, msg := cniError(t, call{cmd: "ADD", id: "late", conf: conf}); !strings.Contains(msg, "no free address") || !strings.Contains(msg, "10.1.0.1-10.1.0.6") {
		t.Errorf("exhausted ADD: got %q, want it to say no free address in 10.1.0.1-10.1.0.6", msg)
	}
	if n := leaseFiles(t, dir); n != 5 {
		t.Errorf("after the exhausted ADD the store holds %d leases, want the 5 earlier ones", n)
	}
	if code, _ := cniError(t, call{cmd: "STATUS", conf: conf}); code != 50 {
		t.Errorf("STATUS when full: code %d, want 50", code)
	}
	ok(t, call{cmd: "DEL", id: "c3", conf: conf})
	ok(t, call{cmd: "STATUS", conf: conf})
	// A store that cannot be written.
	bad := netconf("1.1.0", "/dev/null/x", `"ranges":[[{"subnet":"10.1.0.0/29"}]]`, "")
	if code, _ := cniError(t, call{cmd: "STATUS", conf: bad}); code != 50 {
		t.Errorf("STATUS with an unwritable store: code %d, want 50", code)
	}
}

// An ADD that fails after parsing takes no lease: resolvConf is read before
// any address is allocated.
func TestUnreadableResolvConfTakesNoLease(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-resolv.conf")
	conf := netconf("1.1.0", dir, fmt.Sprintf(`"resolvConf":%q,"ranges":[[{"subnet":"10.1.0.0/24"}]]`, missing), "")
	if _, msg := cniError(t, call{cmd: "ADD", id: "c1", conf: conf}); !strings.Contains(msg, "resolvConf") || !strings.Contains(msg, missing) {
		t.Errorf("ADD with a missing resolvConf: got %q, want it to name ipam.resolvConf and the file", msg)
	}
	if n := leaseFiles(t, dir); n != 0 {
		t.Errorf("the failed ADD left %d leases, want 0", n)
	}
	if err := os.WriteFile(missing, []byte("nameserver 192.0.2.53\nsearch example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ok(t, call{cmd: "ADD", id: "c1", conf: conf}); !strings.Contains(out, "192.0.2.53") {
		t.Errorf("ADD with the file present: result %s has no nameserver 192.0.2.53", out)
	}
}

func TestLockTimeoutIsTryAgainLater(t *testing.T) {
	dir := t.TempDir()
	conf := netconf("1.0.0", dir, `"lockTimeout":"300ms","ranges":[[{"subnet":"10.1.0.0/24"}]]`, "")
	ok(t, call{cmd: "ADD", id: "c1", conf: conf}) // creates the store
	f, err := os.Open(filepath.Join(dir, "net1", "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if code, msg := cniError(t, call{cmd: "ADD", id: "c2", conf: conf}); code != 11 {
		t.Errorf("ADD under a stuck lock: code %d (%s), want 11", code, msg)
	}
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	conf := netconf("1.1.0", dir, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`, "")
	for _, id := range []string{"keep", "gone"} {
		ok(t, call{cmd: "ADD", id: id, conf: conf})
	}
	// No list at all: nothing released, and stderr says why.
	o := run(t, call{cmd: "GC", conf: conf})
	if o.code != 0 || !strings.Contains(o.stderr, "releasing nothing") {
		t.Errorf("GC without a list: exit %d, stderr %q", o.code, o.stderr)
	}
	if n := leaseFiles(t, dir); n != 2 {
		t.Fatalf("GC without a list left %d leases, want 2", n)
	}
	withList := netconf("1.1.0", dir, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`, `"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],`)
	ok(t, call{cmd: "GC", conf: withList})
	if n := leaseFiles(t, dir); n != 1 {
		t.Errorf("GC left %d leases, want 1", n)
	}
	ok(t, call{cmd: "CHECK", id: "keep", conf: conf})
}

func leaseFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "net1", "leases"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func runCLIBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestOperatorCLI(t *testing.T) {
	dir := t.TempDir()
	conf := netconf("1.0.0", dir, dualStack, "")
	ok(t, call{cmd: "ADD", id: "c1", conf: conf})
	ok(t, call{cmd: "ADD", id: "c2", conf: conf})

	out, code := runCLIBinary(t, "ls", "--data-dir", dir, "-o", "json")
	var rows []lsRow
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 4 {
		t.Fatalf("ls -o json: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "ls", "--data-dir", dir); code != 0 || !strings.Contains(out, "10.1.0.3") || !strings.Contains(out, "c2") {
		t.Errorf("ls: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "release", "--data-dir", dir, "--network", "net1", "--ip", "10.1.0.3"); code != 0 {
		t.Errorf("release --ip: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "release", "--data-dir", dir, "--network", "net1", "--container", "c1"); code != 0 || strings.Count(out, "released") != 2 {
		t.Errorf("release --container: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "fsck", "--data-dir", dir); code != 0 || !strings.Contains(out, "1 leases") {
		t.Errorf("fsck: exit %d, %s", code, out)
	}
	// Damage a lease: ls and fsck report it, fsck --repair fixes it.
	if err := os.WriteFile(filepath.Join(dir, "net1", "leases", "fd00::3"), []byte("oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLIBinary(t, "ls", "--data-dir", dir); code != 1 || !strings.Contains(out, "fd00::3") {
		t.Errorf("ls over a damaged lease: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "fsck", "--data-dir", dir); code != 1 || !strings.Contains(out, "corrupt-lease") {
		t.Errorf("fsck: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "fsck", "--data-dir", dir, "--repair"); code != 0 {
		t.Errorf("fsck --repair: exit %d, %s", code, out)
	}
	if out, code := runCLIBinary(t, "fsck", "--data-dir", dir); code != 0 {
		t.Errorf("fsck after repair: exit %d, %s", code, out)
	}
	if _, code := runCLIBinary(t, "release", "--network", "../x", "--ip", "10.1.0.3", "--data-dir", dir); code != 2 {
		t.Errorf("release with an escaping network name: exit %d, want 2", code)
	}
	if out, code := runCLIBinary(t); code != 0 || !strings.Contains(out, "CNI maclan-ipam plugin test") {
		t.Errorf("no command: exit %d, %s", code, out)
	}
}

func TestMigrateFromHostLocal(t *testing.T) {
	hl := filepath.Join(t.TempDir(), "networks")
	netDir := filepath.Join(hl, "net1")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"10.1.0.2":           "aaa\r\neth0",
		"10.1.0.3":           "bbb\r\nnet1",
		"10.1.0.4":           "legacy",
		"fd00::2":            "aaa\r\neth0",
		"last_reserved_ip.0": "10.1.0.4",
		"lock":               "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(netDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	for range 2 { // repeatable
		if out, code := runCLIBinary(t, "migrate", "--from-host-local", hl, "--network", "net1", "--data-dir", dir); code != 0 {
			t.Fatalf("migrate: exit %d, %s", code, out)
		}
	}
	out, _ := runCLIBinary(t, "ls", "--data-dir", dir, "-o", "json")
	var rows []lsRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 4 {
		t.Fatalf("ls after migrate: %s", out)
	}
	conf := netconf("1.0.0", dir, dualStack, "")
	// The adopted leases are the same attachments: ADD is idempotent...
	if out := ok(t, call{cmd: "ADD", id: "aaa", conf: conf}); !strings.Contains(out, "10.1.0.2/24") || !strings.Contains(out, "fd00::2/64") {
		t.Errorf("ADD of a migrated attachment: %s", out)
	}
	// ...a new one gets an address after host-local's cursor...
	if out := ok(t, call{cmd: "ADD", id: "new", conf: conf}); !strings.Contains(out, "10.1.0.5/24") {
		t.Errorf("ADD after migrate: got %s, want 10.1.0.5", out)
	}
	// ...and DEL through the index releases a migrated lease.
	ok(t, call{cmd: "DEL", id: "bbb", ifName: "net1", conf: conf})
	out, _ = runCLIBinary(t, "ls", "--data-dir", dir)
	if strings.Contains(out, "bbb") {
		t.Errorf("bbb still listed after DEL: %s", out)
	}
}

// A configuration that keeps host-local's dataDir migrates into the very
// directory host-local used: one lock file for both, taken once.
func TestMigrateFromHostLocalInPlace(t *testing.T) {
	dir := t.TempDir()
	netDir := filepath.Join(dir, "net1")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"10.1.0.7": "ccc\r\neth0", "lock": ""} {
		if err := os.WriteFile(filepath.Join(netDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := runCLIBinary(t, "migrate", "--from-host-local", netDir, "--network", "net1", "--data-dir", dir); code != 0 {
		t.Fatalf("migrate in place: exit %d, %s", code, out)
	}
	conf := netconf("1.0.0", dir, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`, "")
	if out := ok(t, call{cmd: "ADD", id: "ccc", conf: conf}); !strings.Contains(out, "10.1.0.7/24") {
		t.Errorf("ADD of the attachment migrated in place: %s, want 10.1.0.7", out)
	}
}
