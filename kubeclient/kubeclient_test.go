package kubeclient

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kuryr-pools/kuryr/config"
)

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
users: [{name: u, user: {token: t0k3n}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		k            config.KubernetesSection
		flag         string
		wantHost     string
		wantInsecure bool
		wantCA       string
		wantErr      bool
	}{
		{name: "flag kubeconfig wins", k: config.KubernetesSection{Kubeconfig: "/nonexistent", APIRoot: "https://other"}, flag: kubeconfig, wantHost: "https://10.0.0.1:6443"},
		{name: "kuryr.conf kubeconfig", k: config.KubernetesSection{Kubeconfig: kubeconfig}, wantHost: "https://10.0.0.1:6443"},
		{name: "api_root with a CA", k: config.KubernetesSection{APIRoot: "https://k8s:6443", TokenFile: "/t", SSLCACrtFile: "/ca.crt"}, wantHost: "https://k8s:6443", wantCA: "/ca.crt"},
		{name: "api_root, no CA, kuryr's default: not verified", k: config.KubernetesSection{APIRoot: "https://k8s:6443", TokenFile: "/t"}, wantHost: "https://k8s:6443", wantInsecure: true},
		{name: "api_root, no CA, verify: system roots", k: config.KubernetesSection{APIRoot: "https://k8s:6443", TokenFile: "/t", SSLVerifyServerCrt: true}, wantHost: "https://k8s:6443"},
		{name: "missing kubeconfig file", k: config.KubernetesSection{Kubeconfig: filepath.Join(dir, "nope")}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(context.Background(), tc.k, tc.flag, "ua/1")
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Config = %+v, want an error", cfg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.wantHost || cfg.Insecure != tc.wantInsecure || cfg.CAFile != tc.wantCA || cfg.UserAgent != "ua/1" {
				t.Errorf("host %q insecure %v CA %q UA %q; want %q %v %q", cfg.Host, cfg.Insecure, cfg.CAFile, cfg.UserAgent, tc.wantHost, tc.wantInsecure, tc.wantCA)
			}
		})
	}
}
