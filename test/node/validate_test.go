package node

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateConfig runs `kuryr-agent --validate-config`: the effective settings as JSON and exit 0,
// or exit 2 naming the option, and never the password.
func TestValidateConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	if err := os.WriteFile(good, []byte("[vif_pool]\nports_pool_min = 7\n[neutron]\nauth_url = http://keystone:5000/v3\nusername = kuryr\npassword = s3cr3t-pa55\nproject_name = service\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "kuryr-agent"), "--config-file", good, "--validate-config").Output()
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	var eff map[string]map[string]any
	if err := json.Unmarshal(out, &eff); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if eff["vif_pool"]["ports_pool_min"] != float64(7) || eff["vif_pool"]["ports_pool_batch"] != float64(10) {
		t.Errorf("effective [vif_pool] = %v, want min 7 and the default batch 10", eff["vif_pool"])
	}
	if strings.Contains(string(out), "s3cr3t-pa55") {
		t.Error("--validate-config printed the password")
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("[vif_pool]\nports_pool_min = many\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "kuryr-agent"), "--config-file", bad, "--validate-config")
	msg, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(msg), "[vif_pool] ports_pool_min") || !strings.Contains(string(msg), "many") {
		t.Errorf("invalid config: %v\n%s\nwant exit 2 naming [vif_pool] ports_pool_min and the value", err, msg)
	}
}
