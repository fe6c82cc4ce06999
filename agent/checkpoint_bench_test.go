package agent

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/pool"
)

// BenchmarkCheckpointBurst is a burst of 100 ADDs' checkpoint writes, all at once, on the disk
// of t.TempDir (ext4 here): what the checkpoint costs a burst of pods. The figure (ns per burst)
// is for comparing changes; the number of file writes per burst is reported as writes/burst.
func BenchmarkCheckpointBurst(b *testing.B) {
	const burst = 100
	path := filepath.Join(b.TempDir(), "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for j := 0; j < burst; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := seq.Add(1)
				a := &Attachment{ContainerID: fmt.Sprintf("c%d", n), IfName: "eth0", Port: pool.Port{ID: fmt.Sprintf("p%d", n)}}
				if err := c.Put(a); err != nil {
					b.Error(err)
				}
				if err := c.Drop(a.ContainerID, "eth0"); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	c.mu.Lock()
	b.ReportMetric(float64(c.writes)/float64(b.N), "writes/burst")
	c.mu.Unlock()
}

// BenchmarkCheckpointAddDelWith200Pods is one pod's ADD and DEL (Put, Release, Cooled) on a node
// that already holds 200 attached pods: the checkpoint's CPU and garbage per pod, which grew with
// the pods when every write encoded every entry.
func BenchmarkCheckpointAddDelWith200Pods(b *testing.B) {
	c, err := OpenCheckpoint(filepath.Join(b.TempDir(), "checkpoint.json"))
	if err != nil {
		b.Fatal(err)
	}
	port := func(i int) pool.Port {
		return pool.Port{ID: fmt.Sprintf("port-%036d", i), Key: pool.Key{Node: "node", Project: "project", Network: "network"},
			MAC: "fa:16:3e:00:00:01", FixedIPs: []pool.FixedIP{{SubnetID: "subnet", IP: "10.0.0.1"}}, VIFType: "ovs"}
	}
	for i := range 200 {
		if err := c.Put(&Attachment{ContainerID: fmt.Sprintf("container-%058d", i), IfName: "eth0", Netns: "/var/run/netns/x",
			Pod: PodRef{"default", fmt.Sprintf("pod-%d", i), "uid"}, Port: port(i), Plug: PlugParams{Mode: "ovs", Bridge: "br-int"}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := &Attachment{ContainerID: "container-bench", IfName: "eth0", Netns: "/var/run/netns/y",
			Pod: PodRef{"default", "pod-bench", "uid"}, Port: port(1000), Plug: PlugParams{Mode: "ovs", Bridge: "br-int"}}
		if err := c.Put(a); err != nil {
			b.Fatal(err)
		}
		if err := c.Release(a.ContainerID, a.IfName, time.Time{}); err != nil {
			b.Fatal(err)
		}
		if err := c.Cooled(a.Port.ID); err != nil {
			b.Fatal(err)
		}
	}
}
