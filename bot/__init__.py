"""debug-access: temporary, approved, least-privilege production access from Slack.

The request lifecycle, top to bottom:

    slack/commands, slack/views  -> lifecycle.submit_request   (command -> request)
    slack/actions                -> lifecycle.decide           (decision)
    lifecycle.issue              -> issuer / vault             (Vault issue)
    scheduler                    -> lifecycle.end_grant        (schedule -> revoke)
    audit                                                      (audit trail + channel)
"""

__version__ = "0.1.0"
