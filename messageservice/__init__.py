"""SMS through Bitrix24 messageservice: carriers, provider accounts, the handler, send/poll/push."""
