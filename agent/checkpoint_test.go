package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/pool"
)

func TestCheckpointPersistsAndReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &Attachment{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/x", Port: pool.Port{ID: "p1"}}
	if err := c.Put(a); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(&Attachment{ContainerID: "c2", IfName: "eth0", Port: pool.Port{ID: "p2"}}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	if err := c.Release("c2", "eth0", at); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("checkpoint file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	re, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := re.Attachments(); len(got) != 1 || got[0].Port.ID != "p1" {
		t.Errorf("attachments after reload: %+v", got)
	}
	if cl := re.CoolingPorts(); len(cl) != 1 || cl[0].Port.ID != "p2" || !cl[0].ReleasedAt.Equal(at) {
		t.Errorf("cooling after reload: %+v", cl)
	}
	if err := re.Cooled("p2"); err != nil {
		t.Fatal(err)
	}
	if err := re.Drop("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	re2, _ := OpenCheckpoint(path)
	if len(re2.Attachments()) != 0 || len(re2.CoolingPorts()) != 0 {
		t.Errorf("after Cooled+Drop: %+v %+v", re2.Attachments(), re2.CoolingPorts())
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the checkpoint", len(entries))
	}
}

func TestCheckpointCrashBeforeRenameKeepsTheOldState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	c, _ := OpenCheckpoint(path)
	if err := c.Put(&Attachment{ContainerID: "c1", IfName: "eth0", Port: pool.Port{ID: "p1"}}); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash between fsync and rename: the new state must not be visible.
	c.writeHook = func() { panic("crash") }
	func() {
		defer func() { _ = recover() }()
		_ = c.Put(&Attachment{ContainerID: "c2", IfName: "eth0", Port: pool.Port{ID: "p2"}})
	}()
	re, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatalf("checkpoint unreadable after a crash: %v", err)
	}
	if got := re.Attachments(); len(got) != 1 || got[0].ContainerID != "c1" {
		t.Errorf("after crash: %+v, want only c1", got)
	}
}

// TestCheckpointRemovesTempFilesOfKilledWrites: a write killed before its rename leaves its temporary
// file behind (SIGKILL runs no deferred remove); the next agent start removes it.
func TestCheckpointRemovesTempFilesOfKilledWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "checkpoint.json")
	left := filepath.Join(dir, ".checkpoint.json.tmp-12345")
	other := filepath.Join(dir, ".other.json.tmp-1")
	for _, f := range []string{left, other} {
		if err := os.WriteFile(f, []byte(`{"version":1`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removeKilledWrites(path)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("%s still there (%v)", left, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another file's temporary file was removed: %v", err)
	}
}

func TestCheckpointRefusesCorruptOrForeignFiles(t *testing.T) {
	for name, content := range map[string]string{
		"corrupt":        `{"version":1,"attachments":[`,
		"future version": `{"version":99}`,
		"no port":        `{"version":1,"attachments":[{"containerId":"c","ifName":"eth0","port":{}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "checkpoint.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenCheckpoint(path); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("OpenCheckpoint = %v, want an error naming %s", err, path)
			}
		})
	}
}

// TestCheckpointFileIsTheState checks that the file, written from the entries' cached encodings,
// holds exactly the state in memory after every kind of change, and loads back into it.
func TestCheckpointFileIsTheState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	port := func(i int) pool.Port {
		return pool.Port{ID: fmt.Sprintf("p%d", i), Key: pool.Key{Node: "n", Project: "pr", Network: "net"}, SGs: pool.NewSGSet("sg"),
			MAC: "fa:16:3e:00:00:01", FixedIPs: []pool.FixedIP{{SubnetID: "s", IP: fmt.Sprintf("10.0.0.%d", i)}}, VIFType: "ovs",
			VIFDetails: pool.VIFDetails{BridgeName: "br-int"}}
	}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		name string
		do   func() error
	}{
		{"put 1", func() error {
			return c.Put(&Attachment{ContainerID: "c1", IfName: "eth0", Netns: "/n1", Pod: PodRef{"ns", "a", "u1"}, Port: port(1), CreatedAt: at})
		}},
		{"put 2", func() error {
			return c.Put(&Attachment{ContainerID: "c2", IfName: "eth0", Port: port(2), Network: "kuryr"})
		}},
		{"put 1 again, changed", func() error {
			return c.Put(&Attachment{ContainerID: "c1", IfName: "eth0", Netns: "/n1b", Port: port(1), Plug: PlugParams{Mode: "ovs", Bridge: "br-int"}})
		}},
		{"release 2", func() error { return c.Release("c2", "eth0", at) }},
		{"put 3", func() error { return c.Put(&Attachment{ContainerID: "c3", IfName: "net1", Port: port(3)}) }},
		{"drop 3", func() error { return c.Drop("c3", "net1") }},
		{"cooled 2", func() error { return c.Cooled("p2") }},
		{"release 1", func() error { return c.Release("c1", "eth0", at.Add(time.Second)) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		re, err := OpenCheckpoint(path)
		if err != nil {
			t.Fatalf("%s: reload: %v", s.name, err)
		}
		if got, want := re.Attachments(), c.Attachments(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: attachments on disk %+v, in memory %+v", s.name, got, want)
		}
		if got, want := re.CoolingPorts(), c.CoolingPorts(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cooling on disk %+v, in memory %+v", s.name, got, want)
		}
	}
	if cl := c.CoolingPorts(); len(cl) != 1 || cl[0].Port.ID != "p1" || cl[0].Port.VIFDetails.BridgeName != "br-int" {
		t.Errorf("cooling at the end: %+v, want p1 with its bridge", cl)
	}
}

// TestCheckpointLoadsWholeVIFDetails: a checkpoint written when vifDetails held Neutron's whole
// binding:vif_details loads, keeping the bridge.
func TestCheckpointLoadsWholeVIFDetails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	old := `{"version":1,"attachments":[{"containerId":"c1","ifName":"eth0","netns":"/n","pod":{"namespace":"ns","name":"a"},
		"port":{"id":"p1","key":{"node":"n","project":"p","network":"net"},"sgs":"sg","mac":"m","fixedIps":null,
		"vifType":"ovs","vifDetails":{"bridge_name":"br-x","port_filter":true,"datapath_type":"netdev"}},
		"plug":{},"createdAt":"2026-12-01T00:00:00Z"}],"cooling":[]}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	a, ok := c.Get("c1", "eth0")
	if !ok || a.Port.VIFDetails.BridgeName != "br-x" {
		t.Fatalf("loaded %+v, want c1 on bridge br-x", a)
	}
}
