// Command kratosapp runs a Go test peer the way a kratos app runs a go-pantheon service
// (Roma's player and room services are kratos apps): it starts the server, registers it in
// etcd once it listens, keeps the registration alive and takes it away when it stops.
//
// The registration is kratos's etcd registry's: for each -name, the key
// /microservices/<name>/<id> holding the JSON instance {id, name, version, metadata: {color},
// endpoints: ["grpc://<advertise>"]}, under a lease of its own with kratos's 15 s TTL, renewed
// every 5 s; a lease found gone (etcd restarted, a long pause) is granted again and the key put
// again, as kratos does. etcd is spoken to through its JSON gateway (see package etcdgw).
//
// Usage:
//
//	kratosapp -etcd http://host:port [-advertise host:port] -color C [-id ID] [-version V]
//	          [-name roma.player.service,roma.room.service] -- SERVER [ARGS…]
//
// SERVER must print the address it listens on alone on its first stdout line (the roma peer
// does; without -advertise that address is registered) and stop when its stdin closes; kratosapp holds that stdin open, copies SERVER's stdout
// to its own and, once registered, prints {"event":"registered","keys":[…]}. On SIGTERM or
// SIGINT it revokes the leases (so brokers see the instance go at once) and stops SERVER; when
// SERVER exits, it revokes them and exits with SERVER's status.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopeers/etcdgw"
)

// kratos's registration TTL, and its renewal period (a third of it).
const (
	leaseTTL   = 15
	renewEvery = 5 * time.Second
)

// registration is one key kept under a lease.
type registration struct {
	key   string
	value []byte
	lease int64
}

type app struct {
	etcd *etcdgw.Client
	// mu serialises stdout.
	mu  sync.Mutex
	out *json.Encoder
	// regsMu guards regs and their leases.
	regsMu sync.Mutex
	regs   []*registration
}

func main() {
	etcd := flag.String("etcd", "", "etcd client URL (http://host:port)")
	advertise := flag.String("advertise", "", "host:port to register as the grpc:// endpoint (default: the address SERVER prints)")
	color := flag.String("color", "", "metadata.color of the instances")
	id := flag.String("id", "", "instance id (default: derived from -advertise)")
	version := flag.String("version", "test", "instance version")
	names := flag.String("name", "roma.player.service,roma.room.service", "services to register as, comma-separated")
	flag.Parse()
	server := flag.Args()
	if *etcd == "" || len(server) == 0 {
		fatal("-etcd and a server command are required")
	}

	child := exec.Command(server[0], server[1:]...)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		fatal("%v", err)
	}
	defer stdin.Close()
	stdout, err := child.StdoutPipe()
	if err != nil {
		fatal("%v", err)
	}
	if err := child.Start(); err != nil {
		fatal("start %s: %v", server[0], err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		fatal("%s exited before it listened", server[0])
	}
	fmt.Println(lines.Text())
	if *advertise == "" {
		*advertise = lines.Text()
	}
	if *id == "" {
		*id = "go-roma-" + strings.NewReplacer(":", "-", ".", "-").Replace(*advertise)
	}

	a := &app{etcd: etcdgw.New(*etcd), out: json.NewEncoder(os.Stdout)}
	var keys []string
	for _, name := range strings.Split(*names, ",") {
		instance := etcdgw.Instance{
			ID: *id, Name: name, Version: *version,
			Metadata:  map[string]string{"color": *color},
			Endpoints: []string{"grpc://" + *advertise},
		}
		value, err := json.Marshal(&instance)
		if err != nil {
			fatal("%v", err)
		}
		r := &registration{key: instance.Key(), value: value}
		if err := a.register(r); err != nil {
			_ = child.Process.Kill()
			fatal("register %s: %v", r.key, err)
		}
		a.regs = append(a.regs, r)
		keys = append(keys, r.key)
	}
	a.emit(map[string]interface{}{"event": "registered", "keys": keys})
	go a.keepAlive()

	exited := make(chan error, 1)
	go func() {
		for lines.Scan() {
			a.mu.Lock()
			fmt.Println(lines.Text())
			a.mu.Unlock()
		}
		exited <- child.Wait()
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		a.deregister()
		_ = child.Process.Signal(syscall.SIGTERM)
		<-exited
	case err := <-exited:
		a.deregister()
		if err != nil {
			fatal("%s: %v", server[0], err)
		}
	}
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kratosapp: "+format+"\n", args...)
	os.Exit(1)
}

func (a *app) emit(v interface{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.out.Encode(v)
}

// register puts r's key under a new lease.
func (a *app) register(r *registration) error {
	lease, err := a.etcd.Grant(leaseTTL)
	if err != nil {
		return err
	}
	if err := a.etcd.Put(r.key, r.value, lease); err != nil {
		return err
	}
	r.lease = lease
	return nil
}

// keepAlive renews every lease each renewEvery and registers again what was lost.
func (a *app) keepAlive() {
	for range time.Tick(renewEvery) {
		a.regsMu.Lock()
		for _, r := range a.regs {
			ttl, err := a.etcd.KeepAlive(r.lease)
			if err == nil && ttl > 0 {
				continue
			}
			if err := a.register(r); err != nil {
				fmt.Fprintf(os.Stderr, "kratosapp: %s lost, registering again failed: %v\n", r.key, err)
				continue
			}
			a.emit(map[string]interface{}{"event": "registered", "keys": []string{r.key}})
		}
		a.regsMu.Unlock()
	}
}

// deregister revokes every lease; a failure leaves the lease to expire.
func (a *app) deregister() {
	a.regsMu.Lock()
	defer a.regsMu.Unlock()
	for _, r := range a.regs {
		if err := a.etcd.Revoke(r.lease); err != nil {
			fmt.Fprintf(os.Stderr, "kratosapp: revoke %s: %v (it expires in %d s)\n", r.key, err, leaseTTL)
		}
	}
	a.regs = nil
}
