//! Tasks the server runs beside requests, each stoppable two ways: a
//! graceful [`StoppableTask::stop`] that asks the task to end and waits
//! until it has (so that whatever it held, the store above all, is let go
//! when the call returns), and dropping, which aborts it without waiting.

use std::future::Future;

use tokio::sync::watch;

/// A spawned task that is told to stop through a watch channel.
#[derive(Debug)]
pub(crate) struct StoppableTask {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StoppableTask {
    /// Spawns `run`, which must end soon after its receiver turns `true`.
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        StoppableTask {
            stop,
            task: Some(tokio::spawn(run(stopped))),
        }
    }

    /// Asks the task to end and waits until it has.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StoppableTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits until `stopped` turns `true` (or its sender is gone).
pub(crate) async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
