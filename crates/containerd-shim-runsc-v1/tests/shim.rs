//! The built shim binary between its core and real containerd (house style 13b): `start` in
//! the form each containerd version uses, the task API under both its names, events published
//! to a mock containerd (their order, an outage, the flush at exit), the Sandbox API refused,
//! a shim nobody uses, and the `delete` action. Runsc is the core's scripted fake; nothing
//! needs root (see `support/shim.rs` for where the sockets go).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::sandbox_api::{CreateSandboxRequest, CreateSandboxResponse};
use containerd_shim_protos::types::task::Status;
use support::api::{SANDBOX, TASK_V2, TASK_V3, Task};
use support::containerd::{Received, TaskEvent};
use support::eventually;
use support::process::daemons;
use support::shim::{Form, NS, Shim, World};
use ttrpc::Code;

const ID: &str = "task1";

/// The ttrpc status of a failed call.
fn status(err: ttrpc::Error) -> ttrpc::Status {
    match err {
        ttrpc::Error::RpcStatus(s) => s,
        other => panic!("not an RPC status: {other:?}"),
    }
}

/// containerd's required order for a task: Create, Start, Exit, Delete, each about task `ID`
/// in namespace `NS`, with the task's pid and exit status.
fn assert_task_events(received: &[Received], pid: u32, exit_status: u32) {
    let topics: Vec<&str> = received.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    for r in received {
        assert_eq!(
            (r.namespace.as_str(), r.container_id()),
            (NS, ID.to_owned())
        );
    }
    match (received[0].decode(), received[2].decode()) {
        (TaskEvent::Create(create), TaskEvent::Exit(exit)) => {
            assert_eq!(create.pid, pid);
            assert_eq!((exit.id.as_str(), exit.pid), (ID, pid));
            assert_eq!(exit.exit_status, exit_status);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

/// Creates and starts task `ID`; returns its pid.
async fn create_and_start(world: &World, task: &Task) -> u32 {
    let pid = task.create(&world.create_request(ID)).await.unwrap().pid;
    assert!(pid > 0);
    assert_eq!(task.state(ID).await.unwrap().status, Status::CREATED.into());
    assert_eq!(task.start(ID).await.unwrap().pid, pid);
    pid
}

/// Kills task `ID`, waits for it and deletes it.
async fn kill_wait_delete(task: &Task) {
    task.kill(ID, 9).await.unwrap();
    assert_eq!(task.wait(ID).await.unwrap().exit_status, 137);
    assert_eq!(task.delete(ID).await.unwrap().exit_status, 137);
}

/// Shutdown: the shim exits and its socket is gone.
async fn shut_down(shim: &Shim, task: &Task) {
    task.shutdown(ID).await.unwrap();
    shim.exited().await;
    assert!(!shim.socket().exists(), "the shim left its socket behind");
}

/// `start` as containerd of `form` runs it, then a task's whole life over the task API
/// named `service` (exit status 7 from the container), events in order, shutdown.
async fn lifecycle(form: Form, service: &'static str) {
    let world = World::new().await;
    let bundle = world.bundle(ID);
    let shim = world.start(form, ID).await;
    assert_eq!(shim.address, world.expected_address(form, ID));
    let written = std::fs::read_to_string(bundle.join("address")).unwrap();
    assert_eq!(written, shim.address, "the bundle's address file");

    let task = shim.connect().await.task(service);
    let connected = task.connect(ID).await.unwrap();
    assert_eq!(
        (connected.shim_pid, connected.task_pid),
        (shim.pid().unsigned_abs(), 0)
    );
    world.exits_with(ID, 7);
    let pid = create_and_start(&world, &task).await;
    assert_eq!(task.wait(ID).await.unwrap().exit_status, 7);
    let state = task.state(ID).await.unwrap();
    assert_eq!(
        (state.status, state.exit_status),
        (Status::STOPPED.into(), 7)
    );
    assert_eq!(task.delete(ID).await.unwrap().exit_status, 7);

    shut_down(&shim, &task).await;
    assert_task_events(&world.containerd.received(), pid, 7);
    // containerd 2.x runs at debug level here (`-debug`, the bootstrap log level): so
    // must the shim `start` spawned.
    let debug = matches!(form, Form::Containerd2 | Form::Containerd23);
    assert_eq!(shim.log().contains("level=debug"), debug, "{}", shim.log());
}

/// containerd 1.6: a bare address on stdout, task API v2.
#[tokio::test]
async fn containerd_1_6_starts_the_shim_and_drives_a_task_over_v2() {
    lifecycle(Form::Containerd16, TASK_V2).await;
}

/// containerd 1.7: the same reply with 1.7's environment.
#[tokio::test]
async fn containerd_1_7_starts_the_shim_and_drives_a_task_over_v2() {
    lifecycle(Form::Containerd17, TASK_V2).await;
}

/// containerd 2.0-2.2: a bare address makes containerd use its v2 bridge.
#[tokio::test]
async fn containerd_2_starts_the_shim_and_drives_a_task_over_the_v2_bridge() {
    lifecycle(Form::Containerd2, TASK_V2).await;
}

/// containerd 2.3: `BootstrapParams` in, `BootstrapResult` out, the socket in the directory
/// containerd names, events to the ttrpc address of the parameters (the only one given).
#[tokio::test]
async fn containerd_2_3_bootstraps_the_shim_and_drives_a_task_over_v3() {
    lifecycle(Form::Containerd23, TASK_V3).await;
}

/// Both task API names reach the same tasks; other names reach nothing.
#[tokio::test]
async fn task_api_v2_and_v3_serve_the_same_tasks() {
    let world = World::new().await;
    world.bundle(ID);
    let shim = world.start(Form::Containerd23, ID).await;
    let conn = shim.connect().await;
    let (v2, v3) = (conn.task(TASK_V2), conn.task(TASK_V3));
    v2.create(&world.create_request(ID)).await.unwrap();
    assert_eq!(v3.state(ID).await.unwrap().status, Status::CREATED.into());
    v3.start(ID).await.unwrap();
    assert_eq!(v2.state(ID).await.unwrap().status, Status::RUNNING.into());
    v3.kill(ID, 9).await.unwrap();
    assert_eq!(v2.wait(ID).await.unwrap().exit_status, 137);
    assert_eq!(v3.delete(ID).await.unwrap().exit_status, 137);
    let gone = status(v2.state(ID).await.unwrap_err());
    assert_eq!(gone.code(), Code::NOT_FOUND, "{gone:?}");

    let v4 = conn.task("containerd.task.v4.Task");
    let unknown = status(v4.state(ID).await.unwrap_err());
    assert!(unknown.message.contains("does not exist"), "{unknown:?}");
    shut_down(&shim, &v2).await;
}

/// `start` binds over the socket of a shim that died, and a pod container's `start` finds
/// the pod's running shim instead of starting another.
#[tokio::test]
async fn start_replaces_a_dead_shims_socket_and_reuses_the_pods_shim() {
    let world = World::new().await;
    world.bundle("pod1");
    let stale = world.socket_path(Form::Containerd23, "pod1");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let shim = world.start(Form::Containerd23, "pod1").await;
    assert_eq!(shim.socket(), stale);

    world.bundle_with(
        "app",
        r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"pod1""#,
    );
    let again = world.start(Form::Containerd23, "app").await;
    assert_eq!((&again.address, again.pid()), (&shim.address, shim.pid()));
    assert_eq!(daemons(&shim.address), [shim.pid()], "one shim for the pod");

    let task = shim.connect().await.task(TASK_V2);
    shut_down(&shim, &task).await;
}

/// Events that could not be delivered while containerd was down (the exit, then the
/// delete) are delivered once it is back on the same socket, in order, stamped with the
/// time they happened.
#[tokio::test]
async fn events_during_a_containerd_outage_are_delivered_after_it_in_order() {
    let mut world = World::new().await;
    world.bundle(ID);
    let shim = world.start(Form::Containerd23, ID).await;
    let task = shim.connect().await.task(TASK_V2);
    let pid = create_and_start(&world, &task).await;
    world.containerd.wait_for_events(2).await;

    world.containerd.stop().await;
    kill_wait_delete(&task).await;
    let back = SystemTime::now();
    world.containerd.restart().await;
    let received = world.containerd.wait_for_events(4).await;
    assert!(
        received[2].at < back && received[3].at < back,
        "{received:?}"
    );

    shut_down(&shim, &task).await;
    assert_task_events(&world.containerd.received(), pid, 137);
}

/// Events still queued when the shim stops serving after Shutdown reach containerd before
/// it exits.
#[tokio::test]
async fn events_queued_at_shutdown_are_flushed_before_the_shim_exits() {
    let world = World::new().await;
    world.bundle(ID);
    let shim = world.start(Form::Containerd23, ID).await;
    let task = shim.connect().await.task(TASK_V2);
    create_and_start(&world, &task).await;
    world.containerd.wait_for_events(2).await;

    // containerd holds the exit event unanswered, so the delete event queues behind it
    // and can only be sent after the release, which waits until the shim has stopped
    // serving: then only the flush keeps it alive.
    world.containerd.hold();
    kill_wait_delete(&task).await;
    task.shutdown(ID).await.unwrap();
    drop(task);
    eventually("the shim stops listening", || !shim.is_listening()).await;
    world.containerd.release();
    shim.exited().await;

    let mut topics = world.containerd.topics();
    // An attempt that outlives its 5 s deadline (a very slow machine) is sent again.
    topics.dedup();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    assert!(!shim.socket().exists());
}

/// With containerd gone for good, the flush at exit is bounded: the shim still exits.
#[tokio::test]
async fn a_shim_whose_containerd_is_gone_still_exits_after_shutdown() {
    let mut world = World::new().await;
    world.bundle(ID);
    let shim = world.start(Form::Containerd23, ID).await;
    let task = shim.connect().await.task(TASK_V2);
    create_and_start(&world, &task).await;
    world.containerd.wait_for_events(2).await;
    world.containerd.stop().await;
    kill_wait_delete(&task).await;
    shut_down(&shim, &task).await;
    assert_eq!(world.containerd.topics(), ["/tasks/create", "/tasks/start"]);
}

/// containerd's Sandbox API (`sandboxer = "shim"`) is refused with a message naming the
/// setting; containerd then closes the connection without a Shutdown (it sends one only to
/// shims that had a task), and the shim, with no task and no client, exits by itself.
#[tokio::test]
async fn sandbox_api_is_refused_and_the_unused_shim_exits_by_itself() {
    let world = World::new().await;
    world.bundle(ID);
    let shim = world.start(Form::Containerd23, ID).await;
    let conn = shim.connect().await;
    let req = CreateSandboxRequest {
        sandbox_id: ID.to_owned(),
        ..Default::default()
    };
    let err = conn
        .call::<_, CreateSandboxResponse>(SANDBOX, "CreateSandbox", &req)
        .await
        .unwrap_err();
    let refused = status(err);
    assert_eq!(refused.code(), Code::UNIMPLEMENTED, "{refused:?}");
    assert!(refused.message.contains("sandboxer"), "{refused:?}");
    drop(conn);

    shim.exited().await;
    assert!(!shim.socket().exists(), "the shim left its socket behind");
}

/// `delete` (containerd lost the shim) on a bundle with no `config.json` and no
/// `state.json`: it succeeds, every time, with runc's answer for a killed task.
#[tokio::test]
async fn delete_action_without_any_state_succeeds_twice() {
    let world = World::new().await;
    let bundle = world.empty_bundle(ID);
    for attempt in 1..=2 {
        let out = world.run_delete(ID, &bundle).await;
        assert!(out.status.success(), "attempt {attempt}: {out:?}");
        let resp = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
        assert_eq!((resp.pid, resp.exit_status), (0, 137), "attempt {attempt}");
        assert!(resp.exited_at.is_some(), "attempt {attempt}");
    }
}

/// `delete` removes the socket of a shim that died, never that of a live one (a pod's shim
/// still serving other containers).
#[tokio::test]
async fn delete_action_removes_only_a_dead_shims_socket() {
    let world = World::new().await;
    let socket = |id: &str| world.empty_bundle(id).join("shim.sock");
    let (dead, live) = (socket("dead"), socket("live"));
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    for (id, path) in [("dead", &dead), ("live", &live)] {
        let bundle = path.parent().unwrap();
        std::fs::write(bundle.join("address"), format!("unix://{}", path.display())).unwrap();
        let out = world.run_delete(id, bundle).await;
        assert!(out.status.success(), "{id}: {out:?}");
    }
    assert!(!dead.exists(), "the dead shim's socket stays");
    assert!(live.exists(), "the live shim's socket is gone");
}
