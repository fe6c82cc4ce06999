package neutron_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/neutron"
	"github.com/kuryr-pools/kuryr/neutron/fakeneutron"
)

// fakeKeystone answers POST /v3/auth/tokens with a token whose catalog points the network service
// at neutronURL, and records the authentication bodies it got.
type fakeKeystone struct {
	neutronURL string
	mu         sync.Mutex
	auths      []map[string]any
}

func (k *fakeKeystone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v3/auth/tokens" {
		http.NotFound(w, r)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.mu.Lock()
	k.auths = append(k.auths, body)
	k.mu.Unlock()
	w.Header().Set("X-Subject-Token", "tok-1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
		"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"project":    map[string]any{"id": "pid-from-token", "name": "p", "domain": map[string]any{"id": "default"}},
		"catalog": []any{map[string]any{"type": "network", "name": "neutron", "endpoints": []any{
			map[string]any{"interface": "internal", "region": "RegionTwo", "region_id": "RegionTwo", "url": "http://127.0.0.1:1/"},
			map[string]any{"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": k.neutronURL},
		}}},
	}})
}

// seen records the headers Neutron received.
type seen struct {
	next http.Handler
	mu   sync.Mutex
	ua   []string
	tok  []string
}

func (s *seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ua = append(s.ua, r.Header.Get("User-Agent"))
	s.tok = append(s.tok, r.Header.Get("X-Auth-Token"))
	s.mu.Unlock()
	s.next.ServeHTTP(w, r)
}

func TestKeystoneAuth(t *testing.T) {
	fake := fakeneutron.New()
	nh := &seen{next: fake}
	nsrv := httptest.NewServer(nh)
	t.Cleanup(nsrv.Close)
	fx, err := fake.Fixture("p")
	if err != nil {
		t.Fatal(err)
	}
	ks := &fakeKeystone{neutronURL: nsrv.URL + "/"}
	ksrv := httptest.NewServer(ks)
	t.Cleanup(ksrv.Close)
	ctx := context.Background()

	tests := []struct {
		name     string
		o        neutron.ClientOptions
		wantAuth []string // substrings of the JSON auth body
	}{
		{"password", neutron.ClientOptions{AuthType: "password", AuthURL: ksrv.URL + "/v3", Username: "kuryr", Password: "secret",
			UserDomainName: "Default", ProjectName: "p", ProjectDomainName: "Default", RegionName: "RegionOne", Interface: "internal"},
			[]string{`"password"`, `"name":"kuryr"`, `"project":{"domain":{"name":"Default"},"name":"p"}`}},
		{"application credential", neutron.ClientOptions{AuthType: "v3applicationcredential", AuthURL: ksrv.URL + "/v3",
			ApplicationCredentialID: "acid", ApplicationCredentialSecret: "acsecret", RegionName: "RegionOne", Interface: "internal"},
			[]string{`"application_credential"`, `"id":"acid"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := neutron.NewClient(ctx, tc.o, "kuryr-test/1.0")
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			ks.mu.Lock()
			auth, _ := json.Marshal(ks.auths[len(ks.auths)-1])
			ks.mu.Unlock()
			for _, w := range tc.wantAuth {
				if !strings.Contains(string(auth), w) {
					t.Errorf("auth body %s lacks %s", auth, w)
				}
			}
			if c.Project() != "pid-from-token" {
				t.Errorf("Project() = %q, want the token's project", c.Project())
			}
			// The catalog's RegionOne internal endpoint is the fake Neutron.
			if _, err := c.Subnet(ctx, fx.PodSubnet); err != nil {
				t.Fatalf("Subnet through the catalog endpoint: %v", err)
			}
			nh.mu.Lock()
			ua, tok := nh.ua[len(nh.ua)-1], nh.tok[len(nh.tok)-1]
			nh.mu.Unlock()
			if !strings.HasPrefix(ua, "kuryr-test/1.0") || tok != "tok-1" {
				t.Errorf("Neutron saw User-Agent %q and token %q", ua, tok)
			}
			if st := c.Stats()["keystone"]; st.Count != 1 {
				t.Errorf("keystone requests %+v, want 1 counted by the same transport", st)
			}
		})
	}

	t.Run("clouds.yaml", func(t *testing.T) {
		dir := t.TempDir()
		yaml := "clouds:\n  test:\n    auth:\n      auth_url: " + ksrv.URL + "/v3\n      username: kuryr\n      password: secret\n" +
			"      user_domain_name: Default\n      project_name: p\n      project_domain_name: Default\n" +
			"    region_name: RegionOne\n    interface: internal\n    identity_api_version: 3\n"
		path := filepath.Join(dir, "clouds.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("OS_CLIENT_CONFIG_FILE", path)
		t.Setenv("OS_CLOUD", "test")
		c, err := neutron.NewClient(ctx, neutron.ClientOptions{}, "kuryr-test/1.0")
		if err != nil {
			t.Fatalf("NewClient from clouds.yaml: %v", err)
		}
		if _, err := c.Subnet(ctx, fx.PodSubnet); err != nil {
			t.Fatalf("Subnet: %v", err)
		}
	})
}
