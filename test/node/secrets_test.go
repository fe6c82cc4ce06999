package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kuryr-pools/kuryr/test/testutil"
)

// keystone answers POST /v3/auth/tokens with token, and records the passwords it was sent: in the
// body, and in the Basic authorization the auth URL's userinfo becomes.
type keystone struct {
	token    string
	endpoint string
	mu       sync.Mutex
	seen     []string
}

func (k *keystone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/v3/auth/tokens") {
		http.NotFound(w, r)
		return
	}
	var body struct {
		Auth struct {
			Identity struct {
				Password struct {
					User struct {
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, basic, _ := r.BasicAuth()
	k.mu.Lock()
	k.seen = append(k.seen, body.Auth.Identity.Password.User.Password, basic)
	k.mu.Unlock()
	w.Header().Set("X-Subject-Token", k.token)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
		"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"project":    map[string]any{"id": "p", "name": "p", "domain": map[string]any{"id": "default"}},
		"catalog": []any{map[string]any{"type": "network", "name": "neutron", "endpoints": []any{
			map[string]any{"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": k.endpoint}}}},
	}})
}

func (k *keystone) got(secret string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.seen {
		if s == secret {
			return true
		}
	}
	return false
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// leaks returns the names of the secrets found in text.
func leaks(text string, secrets map[string]string) []string {
	var found []string
	for name, s := range secrets {
		if strings.Contains(text, s) {
			found = append(found, name)
		}
	}
	return found
}

// TestCredentialsNeverLogged runs kuryr-agent at -v 10 with every credential kuryr.conf can hold
// ([neutron] password, application_credential_secret, an auth_url with a password in it, the
// Kubernetes token file) against a Keystone stand-in, the real kube-apiserver and neutron-server,
// does an ADD and a DEL, runs --validate-config on the same file and on one with an invalid auth_url,
// and starts kuryr-controller on it: no log line and no output carries a secret or the Keystone token.
func TestCredentialsNeverLogged(t *testing.T) {
	kubeconfig := testutil.Kubeconfig(t)
	testutil.RequireRoot(t)
	kcfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kctx := kcfg.Contexts[kcfg.CurrentContext]
	server, kubeToken := kcfg.Clusters[kctx.Cluster].Server, kcfg.AuthInfos[kctx.AuthInfo].Token
	testutil.Require(t, kubeToken != "", "the test kubeconfig authenticates with a token")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	rnd := randomHex(t)
	secrets := map[string]string{
		"[neutron] password":                      "kuryr-secret-password-" + rnd,
		"[neutron] application_credential_secret": "kuryr-secret-appcred-" + rnd,
		"the auth_url password":                   "kuryr-secret-urlpass-" + rnd,
		"the Keystone token":                      "kuryr-secret-kstoken-" + rnd,
		"the Kubernetes token":                    kubeToken,
	}
	n := newNeutron(t)
	ks := &keystone{token: secrets["the Keystone token"], endpoint: n.fx.Endpoint}
	ksrv := httptest.NewServer(ks)
	t.Cleanup(ksrv.Close)

	ctx := context.Background()
	node := "kuryr-test-secrets-" + rnd
	if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(kubeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// hack/kube-up.sh's self-signed serving certificate.
	caFile := filepath.Join(filepath.Dir(kubeconfig), "certs", "apiserver.crt")
	if _, err := os.Stat(caFile); err != nil {
		t.Fatalf("the apiserver's certificate: %v", err)
	}
	authURL := fmt.Sprintf("http://kuryr-url-user:%s@%s/v3", secrets["the auth_url password"], strings.TrimPrefix(ksrv.URL, "http://"))
	// These lines come after the harness's: the later [neutron] auth_type and friends win.
	extra := fmt.Sprintf(`[kubernetes]
api_root = %s
token_file = %s
ssl_ca_crt_file = %s
[neutron]
auth_type = password
auth_url = %s
username = kuryr
password = %s
user_domain_name = Default
project_domain_name = Default
application_credential_secret = %s
`, server, tokenFile, caFile, authURL, secrets["[neutron] password"], secrets["[neutron] application_credential_secret"])

	a := startAgentWith(t, n, node, "bridge", extra, "-v", "10")
	if !ks.got(secrets["[neutron] password"]) || !ks.got(secrets["the auth_url password"]) {
		t.Fatal("the agent never authenticated with the password and the auth_url's userinfo: the test proves nothing")
	}
	// A loaded neutron-server can take a minute per bulk create.
	eventually(t, 3*time.Minute, "a free port in the pool", func() (bool, string) {
		p := a.pools(t)
		return len(p) == 1 && p[0].Free >= 1, fmt.Sprint(p)
	})
	p := newPods(t, 1, "secrets-"+rnd)[0]
	if _, err := a.runner.Add(ctx, p); err != nil {
		t.Fatalf("ADD: %v\n%s", err, a.log())
	}
	if _, err := a.runner.Del(ctx, p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	a.stop(syscall.SIGTERM)
	outputs := map[string]string{"kuryr-agent log": a.log()}
	if b, err := os.ReadFile(filepath.Join(a.dir, "kuryr-cni.log")); err == nil {
		outputs["kuryr-cni log"] = string(b)
	}
	if !strings.Contains(outputs["kuryr-agent log"], "kuryr-agent ready") {
		t.Fatalf("the agent log does not show it started:\n%s", outputs["kuryr-agent log"])
	}

	out, err := exec.Command(filepath.Join(binDir, "kuryr-agent"), "--config-file", a.conf, "--validate-config").CombinedOutput()
	if err != nil {
		t.Fatalf("--validate-config: %v\n%s", err, out)
	}
	outputs["--validate-config"] = string(out)
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("[neutron]\nauth_url = ftp://kuryr-url-user:"+secrets["the auth_url password"]+"@keystone/v3\npassword = "+
		secrets["[neutron] password"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(filepath.Join(binDir, "kuryr-agent"), "--config-file", bad, "--validate-config").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "auth_url") {
		t.Fatalf("--validate-config with an ftp auth_url: %v, want an error naming auth_url\n%s", err, out)
	}
	outputs["--validate-config of an invalid auth_url"] = string(out)

	outputs["kuryr-controller log"] = runControllerBriefly(t, a.conf, ks)

	for what, text := range outputs {
		if found := leaks(text, secrets); len(found) > 0 {
			line := ""
			for _, l := range strings.Split(text, "\n") {
				if len(leaks(l, secrets)) > 0 {
					line = l
					break
				}
			}
			for name, s := range secrets {
				line = strings.ReplaceAll(line, s, "<"+name+">")
			}
			t.Errorf("%s carries %s, first in: %s", what, strings.Join(found, ", "), line)
		}
	}
	if t.Failed() {
		for what, text := range outputs {
			for name, s := range secrets { // the test log must not leak them either
				text = strings.ReplaceAll(text, s, "<"+name+">")
			}
			t.Logf("--- %s (last 4 KiB):\n%s", what, text[max(0, len(text)-4096):])
		}
	}
}

// runControllerBriefly starts kuryr-controller on conf for no namespace (a selector nothing
// matches, so it touches nothing shared), waits until it is ready, has failed, or 30s passed,
// stops it and returns its log.
func runControllerBriefly(t *testing.T, conf string, ks *keystone) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "controller.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	health := freeAddress(t)
	ks.mu.Lock()
	before := len(ks.seen)
	ks.mu.Unlock()
	cmd := exec.Command(filepath.Join(binDir, "kuryr-controller"), "--config-file", conf, "--leader-elect=false",
		"--namespace-selector", "kuryr-test-secrets=none", "--gc-period", "1h", "--health-address", health, "--metrics-address", freeAddress(t), "-v", "10")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.After(30 * time.Second)
	ready := false
wait:
	for !ready {
		select {
		case <-exited:
			break wait
		case <-deadline:
			break wait
		case <-time.After(200 * time.Millisecond):
			if resp, err := http.Get("http://" + health + "/ready"); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	ks.mu.Lock()
	authed := len(ks.seen) > before
	ks.mu.Unlock()
	if !authed {
		t.Errorf("kuryr-controller never authenticated to Keystone (ready: %v)", ready)
	}
	t.Logf("kuryr-controller ready: %v", ready)
	b, _ := os.ReadFile(logPath)
	return string(b)
}
