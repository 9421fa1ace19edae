package urtrain;

import java.io.File;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.MiniDFSNNTopology;

/**
 * A throwaway HDFS for ur-train's integration tests: Hadoop's MiniDFSCluster
 * (real NameNode(s) and DataNode(s) in this one JVM).
 *
 * <pre>
 *   --port N        NameNode RPC port (default 0 = a free one); with --ha, nn1 gets N and nn2 N+1
 *   --datanodes N   number of DataNodes (default 1)
 *   --ha            HA nameservice "minidfs-ns" with NameNodes nn1 (active) and nn2 (standby)
 *   --conf-dir DIR  write core-site.xml and hdfs-site.xml for clients (HADOOP_CONF_DIR)
 *   --base-dir DIR  MiniDFSCluster storage (default: a fresh temp dir, deleted at exit)
 *   --no-stdin      do not watch stdin; run until SIGTERM/SIGINT
 * </pre>
 *
 * Once the cluster is up it prints one line on stdout,
 * {@code Ready hdfs://127.0.0.1:PORT} or {@code Ready hdfs://minidfs-ns}, and
 * nothing else goes to stdout but the answers to commands read from stdin (for
 * scripts/faults.sh), one per line:
 * {@code put LOCAL REMOTE} copies a local file or directory in ({@code Put REMOTE}),
 * {@code restart-namenode} restarts the (first) NameNode, keeping its port and
 * metadata ({@code Restarted}); a failed command answers {@code Failed: why}.
 * Nothing else (System.out is pointed at stderr, log4j logs
 * to stderr). It shuts the cluster down and exits 0 when stdin reaches EOF or on
 * SIGTERM/SIGINT; it exits 2 on bad arguments and 1 if the cluster fails to start.
 */
public final class MiniDfs {
  static final String NAMESERVICE = "minidfs-ns";

  private static final Object LOCK = new Object();
  private static MiniDFSCluster cluster;
  private static boolean stopped;
  private static Path tempBaseDir;

  public static void main(String[] args) {
    // Keep the real stdout for the Ready line; anything else printed to System.out
    // (by Hadoop or its dependencies) goes to stderr instead.
    PrintStream out = new PrintStream(
        new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    System.setOut(System.err);

    int port = 0;
    int datanodes = 1;
    boolean ha = false;
    boolean watchStdin = true;
    String confDir = null;
    String baseDir = null;
    try {
      for (int i = 0; i < args.length; i++) {
        switch (args[i]) {
          case "--port": port = Integer.parseInt(value(args, ++i)); break;
          case "--datanodes": datanodes = Integer.parseInt(value(args, ++i)); break;
          case "--ha": ha = true; break;
          case "--conf-dir": confDir = value(args, ++i); break;
          case "--base-dir": baseDir = value(args, ++i); break;
          case "--no-stdin": watchStdin = false; break;
          default: throw new IllegalArgumentException("unknown argument: " + args[i]);
        }
      }
      if (port < 0 || port > 65535 || (ha && port == 65535)) {
        throw new IllegalArgumentException("bad --port " + port);
      }
      if (datanodes < 1) {
        throw new IllegalArgumentException("--datanodes must be at least 1");
      }
    } catch (IllegalArgumentException e) {
      System.err.println("MiniDfs: " + e.getMessage());
      System.err.println("usage: MiniDfs [--port N] [--datanodes N] [--ha] [--conf-dir DIR]"
          + " [--base-dir DIR] [--no-stdin]");
      System.exit(2);
    }

    CountDownLatch stop = new CountDownLatch(1);
    // Handle SIGTERM/SIGINT ourselves so that we can shut down cleanly and exit 0
    // (the JVM's default would run shutdown hooks and exit 143/130).
    for (String sig : new String[] {"TERM", "INT"}) {
      try {
        sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> stop.countDown());
      } catch (IllegalArgumentException e) {
        System.err.println("MiniDfs: cannot handle SIG" + sig + ": " + e.getMessage());
      }
    }
    // Last resort (e.g. System.exit from elsewhere): still stop the cluster.
    Runtime.getRuntime().addShutdownHook(new Thread(MiniDfs::shutdown, "minidfs-shutdown"));

    String uri;
    try {
      uri = start(port, datanodes, ha, confDir, baseDir);
    } catch (Throwable t) {
      System.err.println("MiniDfs: failed to start the cluster");
      t.printStackTrace(System.err);
      shutdown();
      System.exit(1);
      return;
    }

    out.println("Ready " + uri);
    out.flush();

    if (watchStdin) {
      Thread stdinWatcher = new Thread(() -> {
        try (java.io.BufferedReader in = new java.io.BufferedReader(
            new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8))) {
          String line;
          while ((line = in.readLine()) != null) {
            out.println(command(line.trim()));
            out.flush();
          }
        } catch (IOException e) {
          // stdin broken: treat like EOF
        }
        stop.countDown();
      }, "minidfs-stdin");
      stdinWatcher.setDaemon(true);
      stdinWatcher.start();
    }

    try {
      stop.await();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    shutdown();
    System.exit(0);
  }

  /** Runs one command read from stdin; returns its answer line. */
  private static String command(String line) {
    String[] words = line.split("\\s+");
    MiniDFSCluster c;
    synchronized (LOCK) {
      c = cluster;
    }
    try {
      if (words.length == 3 && words[0].equals("put")) {
        c.getFileSystem().copyFromLocalFile(false, true,
            new org.apache.hadoop.fs.Path(new File(words[1]).getAbsoluteFile().toURI()),
            new org.apache.hadoop.fs.Path(words[2]));
        return "Put " + words[2];
      }
      if (words.length == 1 && words[0].equals("restart-namenode")) {
        c.restartNameNode(0, true);
        return "Restarted";
      }
      return "Failed: unknown command: " + line;
    } catch (Throwable t) {
      return "Failed: " + t;
    }
  }

  private static String value(String[] args, int i) {
    if (i >= args.length) {
      throw new IllegalArgumentException(args[i - 1] + " needs a value");
    }
    return args[i];
  }

  private static String start(int port, int datanodes, boolean ha, String confDir,
      String baseDir) throws Exception {
    Configuration conf = new HdfsConfiguration();
    conf.setInt("dfs.replication", 1);
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setBoolean("dfs.webhdfs.enabled", false);
    // Let clients pick small block sizes (e.g. to get multi-block files from a few MB).
    conf.setLong("dfs.namenode.fs-limits.min-block-size", 4096);
    // Leave safe mode as soon as the blocks are reported.
    conf.setInt("dfs.namenode.safemode.extension", 0);
    // Quicker DataNode heartbeats: DataNodes register and report sooner.
    conf.setInt("dfs.heartbeat.interval", 1);

    File base;
    if (baseDir != null) {
      base = new File(baseDir).getAbsoluteFile();
      Files.createDirectories(base.toPath());
    } else {
      synchronized (LOCK) {
        tempBaseDir = Files.createTempDirectory("minidfs-");
      }
      base = tempBaseDir.toFile();
    }

    MiniDFSCluster.Builder builder = new MiniDFSCluster.Builder(conf, base)
        .numDataNodes(datanodes)
        .format(true);
    if (ha) {
      int port2 = port == 0 ? 0 : port + 1;
      builder.nnTopology(new MiniDFSNNTopology().addNameservice(
          new MiniDFSNNTopology.NSConf(NAMESERVICE)
              .addNN(new MiniDFSNNTopology.NNConf("nn1").setIpcPort(port))
              .addNN(new MiniDFSNNTopology.NNConf("nn2").setIpcPort(port2))));
    } else {
      builder.nameNodePort(port);
    }

    MiniDFSCluster c = builder.build();
    synchronized (LOCK) {
      cluster = c;
      if (stopped) {
        throw new IllegalStateException("stopped while starting");
      }
    }
    if (ha) {
      c.transitionToActive(0);
    }
    c.waitActive();
    c.waitClusterUp();

    Configuration core = new Configuration(false);
    Configuration hdfs = new Configuration(false);
    String uri;
    if (ha) {
      uri = "hdfs://" + NAMESERVICE;
      hdfs.set("dfs.nameservices", NAMESERVICE);
      hdfs.set("dfs.ha.namenodes." + NAMESERVICE, "nn1,nn2");
      hdfs.set("dfs.namenode.rpc-address." + NAMESERVICE + ".nn1",
          hostPort(c.getNameNode(0).getNameNodeAddress()));
      hdfs.set("dfs.namenode.rpc-address." + NAMESERVICE + ".nn2",
          hostPort(c.getNameNode(1).getNameNodeAddress()));
      hdfs.set("dfs.client.failover.proxy.provider." + NAMESERVICE,
          "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider");
    } else {
      uri = "hdfs://" + hostPort(c.getNameNode().getNameNodeAddress());
    }
    core.set("fs.defaultFS", uri);
    hdfs.setInt("dfs.replication", 1);
    if (confDir != null) {
      Path dir = Path.of(confDir).toAbsolutePath();
      Files.createDirectories(dir);
      writeXml(core, dir.resolve("core-site.xml"));
      writeXml(hdfs, dir.resolve("hdfs-site.xml"));
    }
    return uri;
  }

  private static String hostPort(InetSocketAddress a) {
    // MiniDFSCluster binds its NameNodes to 127.0.0.1.
    return "127.0.0.1:" + a.getPort();
  }

  /** Write via a temp file + rename so a reader never sees a half-written file. */
  private static void writeXml(Configuration conf, Path target) throws IOException {
    Path tmp = Files.createTempFile(target.getParent(), "." + target.getFileName(), ".tmp");
    try (OutputStream os = Files.newOutputStream(tmp)) {
      conf.writeXml(os);
    }
    try {
      Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING,
          StandardCopyOption.ATOMIC_MOVE);
    } catch (AtomicMoveNotSupportedException e) {
      Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
    }
  }

  private static void shutdown() {
    MiniDFSCluster c;
    Path tmp;
    synchronized (LOCK) {
      if (stopped) {
        return;
      }
      stopped = true;
      c = cluster;
      tmp = tempBaseDir;
    }
    if (c != null) {
      try {
        c.shutdown();
      } catch (Throwable t) {
        System.err.println("MiniDfs: error during shutdown: " + t);
      }
    }
    if (tmp != null) {
      try (Stream<Path> paths = Files.walk(tmp)) {
        paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      } catch (IOException e) {
        System.err.println("MiniDfs: could not delete " + tmp + ": " + e);
      }
    }
  }
}
