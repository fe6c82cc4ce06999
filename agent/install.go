package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install puts kuryr-cni and its network configuration on the node.
type Install struct {
	// BinDir is the node's CNI binary directory (/opt/cni/bin, mounted); empty skips the copy.
	BinDir string
	// PluginPath is the kuryr-cni binary to copy (by default next to kuryr-agent).
	PluginPath string
	// ConfDir is the node's CNI configuration directory (/etc/cni/net.d); empty skips the conflist.
	ConfDir string
	// Template is the conflist to write as ConfDir/10-kuryr.conflist.
	Template string
}

// ConflistName is the file the agent writes in the CNI configuration directory.
const ConflistName = "10-kuryr.conflist"

// InstallPlugin copies kuryr-cni into BinDir so that a runtime never sees a partial or
// non-executable binary: write a temp file in the same directory, chmod, fsync, rename.
func (in Install) InstallPlugin() error {
	if in.BinDir == "" {
		return nil
	}
	src, err := os.Open(in.PluginPath)
	if err != nil {
		return fmt.Errorf("install kuryr-cni: %w", err)
	}
	defer src.Close()
	return installFile(filepath.Join(in.BinDir, "kuryr-cni"), src, 0o755)
}

// InstallConflist writes the conflist: called only once the agent serves, so a node is never
// offered the plugin without an agent behind it.
func (in Install) InstallConflist() error {
	if in.ConfDir == "" {
		return nil
	}
	f, err := os.Open(in.Template)
	if err != nil {
		return fmt.Errorf("install the CNI configuration: %w", err)
	}
	defer f.Close()
	return installFile(filepath.Join(in.ConfDir, ConflistName), f, 0o644)
}

func installFile(dst string, src io.Reader, mode os.FileMode) error {
	dir := filepath.Dir(dst)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op once renamed
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: write: %w", dst, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: chmod: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("install %s: fsync: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if err := os.Rename(name, dst); err != nil {
		return fmt.Errorf("install %s: rename: %w", dst, err)
	}
	return nil
}
