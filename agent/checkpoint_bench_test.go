package agent

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

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
