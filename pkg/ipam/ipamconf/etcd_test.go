package ipamconf

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/maclan-cni/maclan/pkg/config"
)

func TestParseIPAMConfEtcd(t *testing.T) {
	conf := func(store string) string {
		return ipamNet("1.1.0", `{"store":`+store+`,"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, "")
	}
	tests := []struct {
		name, store string
		want        func(t *testing.T, c *Conf)
		wantErr     string
	}{
		{name: "defaults", store: `{"type":"etcd","endpoints":["http://127.0.0.1:2379"]}`, want: func(t *testing.T, c *Conf) {
			e := c.Store.EtcdConf
			if c.Store.Type != "etcd" || e.Prefix != "/maclan" || time.Duration(e.DialTimeout) != 2*time.Second || time.Duration(e.RequestTimeout) != 5*time.Second || c.Store.Dir != DefaultDataDir || e.TLS != nil {
				t.Errorf("got %+v", c.Store)
			}
		}},
		{name: "every field", store: `{"type":"etcd","endpoints":["https://a:2379","https://b:2379"],"prefix":"/lan/prod","dialTimeout":"500ms","dir":"/run/maclan","tls":{"ca":"/etc/ca.pem","cert":"/etc/c.pem","key":"/etc/k.pem"}}`, want: func(t *testing.T, c *Conf) {
			e := c.Store.EtcdConf
			if len(e.Endpoints) != 2 || e.Prefix != "/lan/prod" || time.Duration(e.DialTimeout) != 500*time.Millisecond || c.Store.Dir != "/run/maclan" || e.TLS.Key != "/etc/k.pem" {
				t.Errorf("got %+v tls %+v", c.Store, e.TLS)
			}
		}},
		{name: "CA only", store: `{"type":"etcd","endpoints":["https://a:2379"],"tls":{"ca":"/etc/ca.pem"}}`},
		{name: "no endpoints", store: `{"type":"etcd","endpoints":[]}`, wantErr: "ipam.store.endpoints"},
		{name: "endpoint without port", store: `{"type":"etcd","endpoints":["http://a"]}`, wantErr: `ipam.store.endpoints[0] "http://a"`},
		{name: "endpoint without scheme", store: `{"type":"etcd","endpoints":["a:2379"]}`, wantErr: `endpoints[0] "a:2379"`},
		{name: "endpoint with path", store: `{"type":"etcd","endpoints":["http://a:2379/v3"]}`, wantErr: "endpoints[0]"},
		{name: "mixed schemes", store: `{"type":"etcd","endpoints":["https://a:2379","http://b:2379"]}`, wantErr: "endpoints[1]"},
		{name: "relative prefix", store: `{"type":"etcd","endpoints":["http://a:2379"],"prefix":"maclan"}`, wantErr: `ipam.store.prefix "maclan"`},
		{name: "trailing slash prefix", store: `{"type":"etcd","endpoints":["http://a:2379"],"prefix":"/maclan/"}`, wantErr: "ipam.store.prefix"},
		{name: "prefix with space", store: `{"type":"etcd","endpoints":["http://a:2379"],"prefix":"/a b"}`, wantErr: "ipam.store.prefix"},
		{name: "bad dial timeout", store: `{"type":"etcd","endpoints":["http://a:2379"],"dialTimeout":"2h"}`, wantErr: "ipam.store.dialTimeout 2h0m0s"},
		{name: "bad request timeout", store: `{"type":"etcd","endpoints":["http://a:2379"],"requestTimeout":"-1s"}`, wantErr: "ipam.store.requestTimeout -1s"},
		{name: "unparsable dial timeout", store: `{"type":"etcd","endpoints":["http://a:2379"],"dialTimeout":"soon"}`, wantErr: "decode ipam"},
		{name: "tls over http", store: `{"type":"etcd","endpoints":["http://a:2379"],"tls":{"ca":"/ca"}}`, wantErr: "ipam.store.tls"},
		{name: "cert without key", store: `{"type":"etcd","endpoints":["https://a:2379"],"tls":{"cert":"/c"}}`, wantErr: "cert and key go together"},
		{name: "relative key", store: `{"type":"etcd","endpoints":["https://a:2379"],"tls":{"cert":"/c","key":"k.pem"}}`, wantErr: `ipam.store.tls.key "k.pem"`},
		{name: "etcd fields on disk", store: `{"type":"disk","endpoints":["http://a:2379"]}`, wantErr: "etcd fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(conf(tt.store)), "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, config.ErrInvalid) {
					t.Errorf("got %v, want it to wrap ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if tt.want != nil {
				tt.want(t, c)
			}
		})
	}
}

// TestEtcdEndpointCredentials: a user or password in an endpoint URL is
// refused, naming the field, and the error never shows the password, even
// where the URL is wrong in other ways too.
func TestEtcdEndpointCredentials(t *testing.T) {
	for _, ep := range []string{
		"http://maclan:s3cret@a:2379",
		"https://s3cret@a:2379",
		"http://maclan:s3cret@a",         // and no port
		"http://maclan:s3cret@a:2379/v3", // and a path
		"maclan:s3cret@a:2379",           // no scheme
		"http://maclan:s3cret%zz@a:2379", // unparsable
	} {
		conf := ipamNet("1.1.0", `{"store":{"type":"etcd","endpoints":["http://b:2379",`+strconvQuote(ep)+`]},"ranges":[[{"subnet":"10.1.0.0/24"}]]}`, "")
		_, err := Parse([]byte(conf), "")
		if err == nil || !errors.Is(err, config.ErrInvalid) {
			t.Errorf("endpoint %q: got %v, want ErrInvalid", ep, err)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "s3cret") || !strings.Contains(msg, "store.endpoints[1]") || !strings.Contains(msg, "TLS client certificate") {
			t.Errorf("endpoint %q: got %q, want store.endpoints[1] named, TLS client certificates advised, no password", ep, msg)
		}
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
