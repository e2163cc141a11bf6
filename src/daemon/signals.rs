//! Signals as control messages: SIGHUP asks for a reload, the first SIGTERM or SIGINT for a
//! clean shutdown, the next one to quit at once. Nothing else in the program handles signals.

use std::sync::Arc;

use crate::context::{Control, Handle};

/// Forwards signals to the supervisor. Never returns: once the supervisor stops listening it
/// waits for ever, so that the supervisor's own result always decides how the daemon ends.
pub async fn forward(handle: Arc<Handle>) -> ! {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Cannot listen for signals; stop the daemon with SIGKILL.");
            wait_forever().await
        };
        let mut stopping = false;
        loop {
            let control = tokio::select! {
                _ = hup.recv() => Control::Reload { by: "signal".into(), reply: None },
                _ = term.recv() => if stopping { Control::Quit } else { Control::Shutdown },
                _ = int.recv() => if stopping { Control::Quit } else { Control::Shutdown },
            };
            stopping |= matches!(control, Control::Shutdown);
            if !handle.send(control).await {
                wait_forever().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        let mut stopping = false;
        while tokio::signal::ctrl_c().await.is_ok() {
            let control = if stopping {
                Control::Quit
            } else {
                Control::Shutdown
            };
            stopping = true;
            if !handle.send(control).await {
                break;
            }
        }
        wait_forever().await
    }
}

async fn wait_forever() -> ! {
    loop {
        std::future::pending::<()>().await;
    }
}
