package neutron

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClientOptionsValidate(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	tests := []struct {
		name    string
		o       ClientOptions
		wantErr []string // substrings of the error, each naming an option
	}{
		{"none ok", ClientOptions{AuthType: "none", EndpointOverride: "http://127.0.0.1:9696/", ProjectID: "p"}, nil},
		{"none without endpoint", ClientOptions{AuthType: "none", ProjectID: "p"}, []string{"endpoint_override"}},
		{"none without project", ClientOptions{AuthType: "none", EndpointOverride: "http://x/"}, []string{"project_id"}},
		{"auth type is case-insensitive", ClientOptions{AuthType: "None", EndpointOverride: "http://x/", ProjectID: "p"}, nil},
		{"password ok", ClientOptions{AuthType: "password", AuthURL: "http://k/v3", Username: "u", Password: "pw",
			UserDomainName: "Default", ProjectName: "p", ProjectDomainName: "Default"}, nil},
		{"password with user_id needs no domain", ClientOptions{AuthType: "v3password", AuthURL: "http://k/v3", UserID: "uid", Password: "pw", ProjectID: "pid"}, nil},
		{"password missing everything", ClientOptions{AuthType: "password"}, []string{"auth_url", "password", "username or user_id"}},
		{"password username without domain", ClientOptions{AuthType: "password", AuthURL: "http://k", Username: "u", Password: "pw"},
			[]string{"user_domain_name or user_domain_id"}},
		{"password project_name without domain", ClientOptions{AuthType: "password", AuthURL: "http://k", UserID: "u", Password: "pw", ProjectName: "p"},
			[]string{"project_domain_name or project_domain_id"}},
		{"app credential ok", ClientOptions{AuthType: "v3applicationcredential", AuthURL: "http://k", ApplicationCredentialID: "id",
			ApplicationCredentialSecret: "s"}, nil},
		{"app credential by name needs a user", ClientOptions{AuthType: "applicationcredential", AuthURL: "http://k",
			ApplicationCredentialName: "n", ApplicationCredentialSecret: "s"}, []string{"username or user_id"}},
		{"app credential without secret", ClientOptions{AuthType: "applicationcredential", AuthURL: "http://k", ApplicationCredentialID: "id"},
			[]string{"application_credential_secret"}},
		{"unknown auth type", ClientOptions{AuthType: "token"}, []string{`auth_type "token"`}},
		{"nothing at all", ClientOptions{}, []string{"auth_type", "OS_CLOUD"}},
		{"bad interface", ClientOptions{AuthType: "none", EndpointOverride: "http://x/", ProjectID: "p", Interface: "private"},
			[]string{"interface"}},
		{"negative budget", ClientOptions{AuthType: "none", EndpointOverride: "http://x/", ProjectID: "p", Burst: -1, MaxConcurrentRequests: -2},
			[]string{"burst", "max_concurrent_requests"}},
		{"missing cafile", ClientOptions{AuthType: "none", EndpointOverride: "http://x/", ProjectID: "p", CAFile: "/nonexistent/ca.pem"},
			[]string{"cafile"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.withDefaults().validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one naming %v", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "[neutron]") {
				t.Errorf("error %q does not name the section", err)
			}
		})
	}
}

func TestClientOptionsDefaults(t *testing.T) {
	t.Setenv("OS_CLOUD", "from-env")
	o := ClientOptions{}.withDefaults()
	if o.Cloud != "from-env" {
		t.Errorf("Cloud %q, want OS_CLOUD's value", o.Cloud)
	}
	if o.Timeout != defaultTimeout || o.QPS != defaultQPS || o.Burst != defaultBurst ||
		o.MaxConcurrentRequests != defaultMaxConcurrentRequests || o.MaxRetries != defaultMaxRetries || o.Interface != "public" {
		t.Errorf("defaults not applied: %+v", o)
	}
	// An explicit auth type wins over OS_CLOUD.
	if o := (ClientOptions{AuthType: "none"}).withDefaults(); o.Cloud != "" {
		t.Errorf("Cloud %q taken from the environment despite auth_type none", o.Cloud)
	}
	if o := (ClientOptions{MaxRetries: -1}).withDefaults(); o.MaxRetries != 0 {
		t.Errorf("MaxRetries -1 gives %d, want 0", o.MaxRetries)
	}
}

func TestAuthOptions(t *testing.T) {
	pw := ClientOptions{AuthType: "password", AuthURL: "http://k/v3", Username: "u", Password: "pw", UserDomainName: "Default",
		ProjectName: "p", ProjectDomainID: "default"}
	ao := pw.authOptions()
	if ao.IdentityEndpoint != "http://k/v3" || ao.Username != "u" || ao.Password != "pw" || ao.DomainName != "Default" ||
		ao.Scope == nil || ao.Scope.ProjectName != "p" || ao.Scope.DomainID != "default" || !ao.AllowReauth {
		t.Errorf("password auth options %+v scope %+v", ao, ao.Scope)
	}
	pw.ProjectID = "pid"
	if ao := pw.authOptions(); ao.Scope.ProjectID != "pid" || ao.Scope.ProjectName != "" {
		t.Errorf("project_id must win over project_name: %+v", ao.Scope)
	}
	ac := ClientOptions{AuthType: "v3applicationcredential", AuthURL: "http://k/v3", ApplicationCredentialID: "id",
		ApplicationCredentialSecret: "s", Password: "ignored", ProjectName: "ignored"}
	ao = ac.authOptions()
	if ao.ApplicationCredentialID != "id" || ao.ApplicationCredentialSecret != "s" || ao.Password != "" || ao.Scope != nil {
		t.Errorf("application credential options %+v", ao)
	}
}

func TestNewClientFailsFastOnBadOptions(t *testing.T) {
	t.Setenv("OS_CLOUD", "")
	_, err := NewClient(context.Background(), ClientOptions{AuthType: "password"}, "test")
	if err == nil || !strings.Contains(err.Error(), "auth_url") {
		t.Fatalf("NewClient: %v, want an error naming auth_url", err)
	}
}

func TestNewClientCloudsYAML(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(path, []byte("clouds:\n  other:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", path)
	_, err := NewClient(context.Background(), ClientOptions{Cloud: "missing"}, "test")
	if err == nil || !strings.Contains(err.Error(), `cloud "missing"`) {
		t.Fatalf("NewClient with an unknown cloud: %v, want an error naming it", err)
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"soon", 0, false},
		{time.Now().Add(-time.Hour).UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"), 0, true},
	}
	for _, tc := range tests {
		got, ok := retryAfter(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
