package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kuryr-pools/kuryr/pool"
)

// onDisk reads the checkpoint file as a restarted agent would.
func onDisk(t *testing.T, path string) *Checkpoint {
	t.Helper()
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Errorf("reopen: %v", err)
		return nil
	}
	return c
}

// blockFirstWrite makes the first write of c wait, right before its rename, until release is
// closed; started is closed when it is there.
func blockFirstWrite(c *Checkpoint) (started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	c.writeHook = func() {
		once.Do(func() {
			close(started)
			<-release
		})
	}
	return started, release
}

// Changes made while a write is in progress share the next write: N concurrent Puts cost two
// writes, not N, and each returns only once its attachment is on disk. Readers are not held up by
// the disk meanwhile.
func TestCheckpointGroupCommit(t *testing.T) {
	const n = 50
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	started, release := blockFirstWrite(c)
	att := func(i int) *Attachment {
		return &Attachment{ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0", Port: pool.Port{ID: fmt.Sprintf("p%03d", i)}}
	}
	var wg sync.WaitGroup
	put := func(i int) {
		defer wg.Done()
		if err := c.Put(att(i)); err != nil {
			t.Errorf("Put %d: %v", i, err)
			return
		}
		// Durable before it returns: a restart now finds it.
		if re := onDisk(t, path); re != nil {
			if _, ok := re.Get(att(i).ContainerID, "eth0"); !ok {
				t.Errorf("Put %d returned before its attachment was on disk", i)
			}
		}
	}
	wg.Add(1)
	go put(0)
	<-started // the first write is between fsync and rename, with the lock released
	for i := 1; i < n; i++ {
		wg.Add(1)
		go put(i)
	}
	// Every change is made in memory and visible to Get while the disk is busy.
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; i < n; i++ {
		for {
			if _, ok := c.Get(att(i).ContainerID, "eth0"); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Put %d not visible to Get while a write was in progress", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if re := onDisk(t, path); re != nil && len(re.Attachments()) != 0 {
		t.Errorf("the blocked write is not renamed yet, but the file holds %d attachments", len(re.Attachments()))
	}
	close(release)
	wg.Wait()
	c.mu.Lock()
	writes := c.writes
	c.mu.Unlock()
	if writes != 2 {
		t.Errorf("%d Puts made %d writes, want 2 (the blocked one, then one for the %d that waited)", n, writes, n-1)
	}
	if re := onDisk(t, path); re != nil && len(re.Attachments()) != n {
		t.Errorf("on disk: %d attachments, want %d", len(re.Attachments()), n)
	}
}

// Concurrent Put, Release, Drop and Cooled on distinct containers: after each returns, the file
// says what it did, and at the end memory and disk agree.
func TestCheckpointConcurrentChangesAreDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 12
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				ctr, port := fmt.Sprintf("w%d-r%d", w, r), fmt.Sprintf("port-%d-%d", w, r)
				if err := c.Put(&Attachment{ContainerID: ctr, IfName: "eth0", Port: pool.Port{ID: port}}); err != nil {
					t.Error(err)
					return
				}
				re := onDisk(t, path)
				if re == nil {
					return
				}
				if _, ok := re.Get(ctr, "eth0"); !ok {
					t.Errorf("%s: Put returned before it was durable", ctr)
				}
				switch r % 3 {
				case 0: // DEL: released and cooling, then the pool takes the port back
					if err := c.Release(ctr, "eth0", at); err != nil {
						t.Error(err)
					}
					re := onDisk(t, path)
					if _, ok := re.Get(ctr, "eth0"); ok {
						t.Errorf("%s: Release returned before it was durable", ctr)
					}
					if !cooling(re, port) {
						t.Errorf("%s: port %s not cooling on disk after Release", ctr, port)
					}
					if err := c.Cooled(port); err != nil {
						t.Error(err)
					}
					if cooling(onDisk(t, path), port) {
						t.Errorf("%s: port %s still cooling on disk after Cooled", ctr, port)
					}
				case 1: // a failed plug rolled back
					if err := c.Drop(ctr, "eth0"); err != nil {
						t.Error(err)
					}
					if _, ok := onDisk(t, path).Get(ctr, "eth0"); ok {
						t.Errorf("%s: Drop returned before it was durable", ctr)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	re := onDisk(t, path)
	if re == nil {
		return
	}
	if got, want := len(re.Attachments()), len(c.Attachments()); got != want || want != workers*rounds/3 {
		t.Errorf("attachments: %d on disk, %d in memory, want %d", got, want, workers*rounds/3)
	}
	if len(re.CoolingPorts()) != 0 || len(c.CoolingPorts()) != 0 {
		t.Errorf("cooling left: %d on disk, %d in memory", len(re.CoolingPorts()), len(c.CoolingPorts()))
	}
}

func cooling(c *Checkpoint, portID string) bool {
	if c == nil {
		return false
	}
	for _, cl := range c.CoolingPorts() {
		if cl.Port.ID == portID {
			return true
		}
	}
	return false
}

// A write that fails fails every change it carried: each caller gets the error and its change is
// undone in memory, so a later write does not persist it.
func TestCheckpointFailedGroupWriteUndoesEveryChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "checkpoint.json")
	c, err := OpenCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put(&Attachment{ContainerID: "kept", IfName: "eth0", Port: pool.Port{ID: "p-kept"}}); err != nil {
		t.Fatal(err)
	}
	started, release := blockFirstWrite(c)
	const n = 10
	errs := make(chan error, n)
	go func() { errs <- c.Put(&Attachment{ContainerID: "c0", IfName: "eth0", Port: pool.Port{ID: "p0"}}) }()
	<-started
	for i := 1; i < n; i++ {
		go func() {
			errs <- c.Put(&Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", Port: pool.Port{ID: fmt.Sprintf("p%d", i)}})
		}()
	}
	for i := 1; i < n; i++ {
		for {
			if _, ok := c.Get(fmt.Sprintf("c%d", i), "eth0"); ok {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	// The disk goes away under the writer: its rename fails, and so does the next write.
	if err := os.Rename(dir, dir+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	close(release)
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			t.Error("a Put carried by a failed write returned nil")
		}
	}
	if got := c.Attachments(); len(got) != 1 || got[0].ContainerID != "kept" {
		t.Errorf("in memory after the failed writes: %d attachments, want only the one written before", len(got))
	}
}
