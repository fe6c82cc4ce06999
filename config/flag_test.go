package config

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

func TestFilesFlagLoadsInOrder(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
	if err := os.WriteFile(a, []byte("[vif_pool]\nports_pool_min = 2\nports_pool_batch = 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("[vif_pool]\nports_pool_min = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var files Files
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	files.Register(fs)
	if err := fs.Parse([]string{"--config-file", a, "--config-file", b}); err != nil {
		t.Fatal(err)
	}
	cfg, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VIFPool.PortsPoolMin != 3 || cfg.VIFPool.PortsPoolBatch != 4 {
		t.Errorf("min %d batch %d, want 3 (second file) and 4 (first file)", cfg.VIFPool.PortsPoolMin, cfg.VIFPool.PortsPoolBatch)
	}
	if files.String() != a+","+b {
		t.Errorf("String() = %q", files.String())
	}
}
