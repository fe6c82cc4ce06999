package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInstallPluginAndConflist(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "kuryr-cni-src")
	tmpl := filepath.Join(dir, "template")
	if err := os.WriteFile(plugin, []byte("#!/bin/true\nnew"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmpl, []byte(`{"cniVersion":"1.1.0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An old binary is replaced in place.
	if err := os.WriteFile(filepath.Join(bin, "kuryr-cni"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	in := Install{BinDir: bin, PluginPath: plugin, ConfDir: conf, Template: tmpl}
	if err := in.InstallPlugin(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(bin, "kuryr-cni"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary: %v mode %v, want 0755", err, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(bin, "kuryr-cni")); string(b) != "#!/bin/true\nnew" {
		t.Errorf("installed binary holds %q", b)
	}
	if _, err := os.Stat(filepath.Join(conf, ConflistName)); !os.IsNotExist(err) {
		t.Fatal("the conflist must not exist before InstallConflist")
	}
	if err := in.InstallConflist(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(conf, ConflistName)); string(b) != `{"cniVersion":"1.1.0"}` {
		t.Errorf("conflist holds %q", b)
	}
	for _, d := range []string{bin, conf} {
		entries, _ := os.ReadDir(d)
		if len(entries) != 1 {
			t.Errorf("%s holds %d entries, want no temp files left", d, len(entries))
		}
	}
	if err := (Install{BinDir: bin, PluginPath: filepath.Join(dir, "missing")}).InstallPlugin(); err == nil {
		t.Error("installing a missing plugin succeeded")
	}
}
