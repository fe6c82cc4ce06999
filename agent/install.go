package agent

import (
	"fmt"
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
	return writeFileAtomic(filepath.Join(in.BinDir, "kuryr-cni"), src, 0o755, nil)
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
	return writeFileAtomic(filepath.Join(in.ConfDir, ConflistName), f, 0o644, nil)
}
